"""Offline SQL read by PostgreSQL's own parser (pglast, libpg_query), never by hand.

What is a string, a comment, a quoted identifier or a statement boundary is
what PostgreSQL says it is: dollar-quoted function bodies with semicolons and
quotes in them, ``E'it\\'s'`` strings, ``--`` comments with a stray quote,
``"odd;name"`` identifiers and ``BEGIN ATOMIC ... END`` bodies are all read
exactly.  A hand-written scanner gets one of these wrong sooner or later.

pglast ships the parser of one PostgreSQL major version (17 for pglast 8); it
reads the SQL of every older supported version too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pglast import ast
from pglast.parser import ParseError, Token, parse_plpgsql_json, parse_sql, scan

__all__ = ["Statement", "do_block_statements", "relation_name", "statements"]


@dataclass(frozen=True)
class Statement:
    """One statement of a script: where it is, its text, and its parse tree."""

    #: Offsets of the statement in the script: ``script[start:end]`` is :attr:`text` (no ``;``).
    start: int
    end: int
    text: str
    #: 1-based line of the statement's first character.
    line: int
    #: The statement's parse tree; ``None`` when PostgreSQL's grammar rejects it (see :attr:`error`).
    node: ast.Node | None
    error: str | None = None

    @property
    def last_line(self) -> int:
        return self.line + self.text.count("\n")


def _line(sql: str, offset: int) -> int:
    return sql.count("\n", 0, offset) + 1


def _located(sql: str, start: int, end: int, node: ast.Node | None, error: str | None = None) -> Statement:
    text = sql[start:end]
    stripped = text.lstrip()
    start += len(text) - len(stripped)
    text = stripped.rstrip()
    return Statement(start, start + len(text), text, _line(sql, start), node, error)


def statements(sql: str) -> list[Statement]:
    """Every statement of ``sql`` in order, located and parsed.

    When the grammar rejects part of the script, the script is cut into
    statements by PostgreSQL's scanner instead (quotes and comments still
    exact) and each is parsed alone, so one bad statement does not hide the
    others; the rejected ones have ``node=None`` and the parser's message.
    """
    try:
        raws = parse_sql(sql)
    except ParseError:
        return list(_one_by_one(sql))
    found: list[Statement] = []
    for raw in raws:
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(sql)  # 0: up to the end of the script
        found.append(_located(sql, start, end, raw.stmt))
    return found


def _message(exc: Exception) -> str:
    """The parser's message without its ``, at index N`` (an offset into the piece, not the script)."""
    return str(exc.args[0]) if exc.args else type(exc).__name__


def _one_by_one(sql: str) -> Iterator[Statement]:
    """Cut at every ``;`` token of PostgreSQL's scanner, then parse each piece alone.

    Only used when the grammar rejects the script: a ``BEGIN ATOMIC`` body is
    then cut at its inner semicolons too, and its pieces are reported as not
    parsing rather than missed.
    """
    try:
        tokens = [t for t in scan(sql) if t.name not in ("SQL_COMMENT", "C_COMMENT")]
    except ParseError as exc:  # e.g. an unterminated quoted string: the scanner cannot cut it either
        yield _located(sql, 0, len(sql), None, _message(exc))
        return
    piece: list[Token] = []
    for token in [*tokens, None]:
        if token is not None and token.name != "ASCII_59":  # ";"
            piece.append(token)
            continue
        if piece:
            start, end = piece[0].start, piece[-1].end + 1  # a token's end is inclusive
            try:
                (raw,) = parse_sql(sql[start:end])
            except (ParseError, ValueError) as exc:
                yield _located(sql, start, end, None, _message(exc))
            else:
                yield _located(sql, start, end, raw.stmt)
        piece = []


def relation_name(relation: ast.RangeVar) -> str:
    """``table`` for a table of ``public`` (or with no schema named), else ``schema.table``."""
    if relation.schemaname in (None, "public"):
        return str(relation.relname)
    return f"{relation.schemaname}.{relation.relname}"


def _option(options: tuple[Any, ...] | None, name: str) -> Any:
    for option in options or ():
        if isinstance(option, ast.DefElem) and option.defname == name and isinstance(option.arg, ast.String):
            return option.arg.sval
    return None


def _walk(tree: Any) -> Iterator[dict[str, Any]]:
    if isinstance(tree, dict):
        yield tree
        for value in tree.values():
            yield from _walk(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _walk(value)


def _string_literal(expression: str) -> str | None:
    """The value of ``expression`` when it is one constant string (``'...'``, ``E'...'``, ``$$...$$``)."""
    try:
        (raw,) = parse_sql(f"SELECT {expression}")
    except (ParseError, ValueError):
        return None
    select = raw.stmt
    if not isinstance(select, ast.SelectStmt) or not select.targetList or len(select.targetList) != 1:
        return None
    value = select.targetList[0].val
    if isinstance(value, ast.A_Const) and isinstance(value.val, ast.String):
        return str(value.val.sval)
    return None


def do_block_statements(do: ast.DoStmt) -> list[str] | None:
    """The SQL a ``DO`` block runs that can be known without running it; ``None`` if it cannot be read.

    Static statements of a PL/pgSQL block are found by PostgreSQL's PL/pgSQL
    parser, and so is ``EXECUTE`` of a constant string; ``EXECUTE`` of a
    string built at run time (``format(...)``) cannot be known and is not
    returned.  A block in another language returns ``None``.
    """
    body = _option(do.args, "as")
    language = _option(do.args, "language") or "plpgsql"
    if body is None or language.lower() != "plpgsql":
        return None
    tag = "agentdb_do"
    while f"${tag}$" in body:
        tag += "_"
    function = f"CREATE FUNCTION pg_temp.agentdb_do() RETURNS void LANGUAGE plpgsql AS ${tag}${body}${tag}$"
    try:
        tree = json.loads(parse_plpgsql_json(function))
    except ParseError:
        return None
    found: list[str] = []
    for node in _walk(tree):
        if "PLpgSQL_stmt_execsql" in node:
            found.append(node["PLpgSQL_stmt_execsql"]["sqlstmt"]["PLpgSQL_expr"]["query"])
        elif "PLpgSQL_stmt_dynexecute" in node:
            literal = _string_literal(node["PLpgSQL_stmt_dynexecute"]["query"]["PLpgSQL_expr"]["query"])
            if literal is not None:
                found.append(literal)
    return found
