"""The slow path: stage the rows as text, find every bad row with set-based checks, insert the rest.

Everything happens in the import's own session, in temporary tables
(``pg_temp.agentdb_bulk_*``, gone with the session):

* ``agentdb_bulk_stage``: one ``text`` column per column of the file and
  ``agentdb_n``, the row's ordinal (a sequence default, so COPY numbers rows in
  file order); filled by COPY, which cannot fail on a value of type text --
  what it could refuse as a whole was set aside by :class:`~agentdb.bulk.scan.Scanner`;
* ``agentdb_bulk_bad``: one row per ordinal that is rejected (or skipped, or
  to be updated), with the column, SQLSTATE and reason; the first reason wins.

Then one statement per kind of check, each over the whole stage:

1. types: on PostgreSQL 16, ``pg_input_is_valid`` / ``pg_input_error_info``
   (no subtransaction, no exception); on 15, a generated PL/pgSQL function
   that converts a row's values inside one exception block (one
   subtransaction per row, not per value) and says which column failed;
2. NOT NULL; 3. CHECK constraints (their catalogue expressions, over the
   typed values); 4. partition months (rows whose key has no partition are
   rejected only if it is infinite: the missing months are created);
5. UNIQUE and primary keys, within the file (a hash aggregate) and against
   the table (``--on-conflict``: reject, skip, or update);
6. foreign keys (an anti-join per constraint).

The insert is one ``INSERT ... SELECT`` of the rows left.  Whatever no check
foresaw (a trigger that raises, a constraint on a column the file does not
have, a row a concurrent session just inserted) makes it fail: it is retried on
halves of the ordinal range, each under a savepoint, down to single rows, so
every such row is found and rejected with PostgreSQL's own SQLSTATE.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.exc import DBAPIError

from agentdb.bulk._sql import (
    copy_in,
    copy_line_of,
    dbapi,
    error_of,
    execute,
    execute_count,
    one,
    safe_reason,
    sqlstate_of,
)
from agentdb.bulk.catalog import TableInfo
from agentdb.bulk.scan import Chunk, Dialect, Scanner, locate
from agentdb.errors import BulkFailed, BulkInputInvalid

__all__ = ["Bad", "Stage"]

_log = logging.getLogger("agentdb.bulk")

ORDINAL = "agentdb_n"
_STAGE = sql.Identifier("pg_temp", "agentdb_bulk_stage")
_JSON = sql.Identifier("pg_temp", "agentdb_bulk_json")
_SEQ = sql.Identifier("pg_temp", "agentdb_bulk_seq")
_BAD = sql.Identifier("pg_temp", "agentdb_bulk_bad")
_TYPED = sql.Identifier("pg_temp", "agentdb_bulk_typed")
_ROW_ERROR = sql.Identifier("pg_temp", "agentdb_bulk_row_error")
_N = sql.Identifier(ORDINAL)
#: SQLSTATE classes of errors that belong to a row (data exceptions, integrity violations, raised by a trigger).
ROW_ERROR_CLASSES = ("22", "23", "P0")
#: Retries of one staging chunk, each after setting aside one record PostgreSQL refused.
_CHUNK_RETRIES = 1000


@dataclass(frozen=True)
class Bad:
    """A staged row that is not loaded as it is: ``reject``, ``skip`` or ``update``."""

    n: int
    kind: str
    column: str | None
    sqlstate: str | None
    reason: str
    #: Ordinal of the row it duplicates (a key repeated in the file), to name that row's line.
    ref: int | None


class Stage:
    """The staging tables of one segment of the file, and the checks run on them."""

    def __init__(self, connection: sa.Connection, info: TableInfo, columns: list[str], dialect: Dialect,
                 *, server_version: int, on_conflict: str, encoding: str) -> None:
        self.connection = connection
        self.info = info
        self.columns = list(columns)
        self.dialect = dialect
        self.server_version = server_version
        self.on_conflict = on_conflict
        self.encoding = encoding
        self.staged = 0
        self.names = info.names()
        self._typed = False

    # -- staging

    def _texts(self) -> list[sql.Identifier]:
        return [sql.Identifier(f"c{i + 1}") for i in range(len(self.columns))]

    def create(self) -> None:
        """(Re)create the temporary tables; the connection is in a transaction the caller commits."""
        for statement in (
            sql.SQL("DROP TABLE IF EXISTS {}, {}, {}, {}").format(_STAGE, _JSON, _BAD, _TYPED),
            sql.SQL("DROP SEQUENCE IF EXISTS {}").format(_SEQ),
            sql.SQL("CREATE TEMPORARY SEQUENCE {} MINVALUE 0 START 1").format(sql.Identifier("agentdb_bulk_seq")),
            sql.SQL("CREATE TEMPORARY TABLE {} (n bigint PRIMARY KEY, kind text NOT NULL, col text, "
                    "sqlstate text, reason text NOT NULL, ref bigint)").format(sql.Identifier("agentdb_bulk_bad")),
        ):
            execute(self.connection, statement)
        default = sql.SQL("bigint NOT NULL DEFAULT nextval({})").format(sql.Literal("pg_temp.agentdb_bulk_seq"))
        if self.dialect.jsonl:
            execute(self.connection, sql.SQL("CREATE TEMPORARY TABLE {} ({} {}, j text)").format(
                sql.Identifier("agentdb_bulk_json"), _N, default))
        else:
            execute(self.connection, sql.SQL("CREATE TEMPORARY TABLE {} ({} {}, {})").format(
                sql.Identifier("agentdb_bulk_stage"), _N, default,
                sql.SQL(", ").join(sql.SQL("{} text").format(t) for t in self._texts())))

    def _copy_statement(self) -> sql.Composed:
        if self.dialect.jsonl:
            return sql.SQL("COPY {} (j) FROM STDIN (FORMAT text, ENCODING {})").format(
                _JSON, sql.Literal(self.encoding))
        return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, DELIMITER {}, QUOTE {}, ENCODING {})").format(
            _STAGE, sql.SQL(", ").join(self._texts()), sql.Literal(self.dialect.delimiter.decode()),
            sql.Literal(self.dialect.quote.decode()), sql.Literal(self.encoding))

    def copy_chunk(self, chunk: Chunk, scanner: Scanner) -> None:
        """COPY one chunk into the stage; a record PostgreSQL refuses is set aside and the chunk copied again."""
        statement = self._copy_statement()
        quote = None if self.dialect.jsonl else self.dialect.quote
        for _ in range(_CHUNK_RETRIES):
            savepoint = self.connection.begin_nested()
            try:
                self.staged += copy_in(self.connection, statement, [bytes(chunk.data)])
                savepoint.commit()
                return
            except DBAPIError as exc:
                savepoint.rollback()
                number, column = copy_line_of(exc)
                state = sqlstate_of(exc)
                if number is None or not state or state[:2] not in ROW_ERROR_CLASSES:
                    raise BulkFailed(self.info.qualified, "staging", state,
                                     safe_reason(str(exc.orig), self.names)) from None
                execute(self.connection, sql.SQL("SELECT setval({}, {}, true)").format(
                    sql.Literal("pg_temp.agentdb_bulk_seq"), sql.Literal(self.staged)))
                pos, length, offset, line = locate(chunk, number, quote)
                column_name = self._column_of(column)
                scanner.set_aside(offset, length, line, state, safe_reason(str(exc.orig), self.names), column_name)
                _cut(chunk, pos, length, offset, line)
                if not chunk.data:
                    return
        raise BulkFailed(self.info.qualified, "staging", None, f"more than {_CHUNK_RETRIES} records of one chunk "
                         "were refused by COPY")

    def _column_of(self, copy_column: str | None) -> str | None:
        """The file column of COPY's ``column c3`` (a staging column name)."""
        if copy_column and copy_column.startswith("c") and copy_column[1:].isdigit():
            index = int(copy_column[1:]) - 1
            if 0 <= index < len(self.columns):
                return self.columns[index]
        return None

    def finish_jsonl(self) -> list[str]:
        """Turn the staged JSON lines into the text stage; the columns the file has (keys found), in table order.

        A line that is not a JSON object, or has a key twice, is rejected; a key
        that is no column of the table is an error before anything is loaded.
        """
        execute(self.connection, sql.SQL("ANALYZE {}").format(_JSON))
        self._reject_types([("j", "jsonb")], source=_JSON, column_names=[None])
        execute(self.connection, sql.SQL(
            "INSERT INTO {bad} (n, kind, col, sqlstate, reason) SELECT {n}, 'reject', NULL, '22P02', "
            "'the line is not a JSON object' FROM (SELECT * FROM {json} s WHERE NOT EXISTS "
            "(SELECT FROM {bad} b WHERE b.n = s.{n}) OFFSET 0) s "
            "WHERE jsonb_typeof(s.j::jsonb) <> 'object' ON CONFLICT (n) DO NOTHING"
        ).format(bad=_BAD, n=_N, json=_JSON))
        execute(self.connection, sql.SQL(
            "INSERT INTO {bad} (n, kind, col, sqlstate, reason) SELECT DISTINCT ON (s.{n}) s.{n}, 'reject', NULL, "
            "'22030', 'a key appears twice in the JSON object' FROM (SELECT * FROM {json} s WHERE NOT EXISTS "
            "(SELECT FROM {bad} b WHERE b.n = s.{n}) OFFSET 0) s "
            "CROSS JOIN LATERAL json_object_keys(s.j::json) k "
            "GROUP BY s.{n}, k HAVING count(*) > 1 ON CONFLICT (n) DO NOTHING"
        ).format(bad=_BAD, n=_N, json=_JSON))
        keys = [str(r[0]) for r in execute(self.connection, sql.SQL(
            "SELECT DISTINCT k FROM (SELECT * FROM {json} s WHERE NOT EXISTS (SELECT FROM {bad} b WHERE b.n = s.{n}) "
            "OFFSET 0) s CROSS JOIN LATERAL jsonb_object_keys(s.j::jsonb) k ORDER BY 1"
        ).format(bad=_BAD, n=_N, json=_JSON))]
        unknown = [k for k in keys if k not in self.info.columns]
        if unknown:
            raise BulkInputInvalid(self.info.qualified, "JSON keys", "not columns of the table: "
                                   + ", ".join(_shown(k) for k in unknown[:10]),
                                   hint="keys are matched with column names exactly")
        self.columns = [c for c in self.info.columns if c in keys]
        exprs = []
        for name in self.columns:
            column = self.info.columns[name]
            value = sql.SQL("x.j -> {}").format(sql.Literal(name))
            if column.json:
                expr = sql.SQL("CASE WHEN jsonb_typeof({v}) = 'null' THEN NULL ELSE ({v})::text END").format(v=value)
            elif column.category == "A":
                expr = sql.SQL(
                    "CASE jsonb_typeof({v}) WHEN 'array' THEN coalesce((SELECT array_agg(e)::text FROM "
                    "jsonb_array_elements_text({v}) e), '{{}}') ELSE x.j ->> {k} END"
                ).format(v=value, k=sql.Literal(name))
            else:
                expr = sql.SQL("x.j ->> {}").format(sql.Literal(name))
            # A key a line does not have takes the column's default, as a missing column would.
            default: sql.Composable | None = None
            if column.identity:
                default = sql.SQL("nextval(pg_get_serial_sequence({}, {}))::text").format(
                    sql.Literal(f'"{self.info.schema}"."{self.info.name}"'), sql.Literal(name))
            elif column.default is not None and not column.generated:
                default = sql.SQL("({})::text").format(sql.SQL(column.default))  # catalogue text
            if default is not None:
                expr = sql.SQL("CASE WHEN x.j ? {} THEN {} ELSE {} END").format(sql.Literal(name), expr, default)
            exprs.append(expr)
        select = sql.SQL(", ").join(sql.SQL("{} AS {}").format(e, t) for e, t in zip(exprs, self._texts(), strict=True))
        execute(self.connection, sql.SQL(
            "CREATE TEMPORARY TABLE {stage} AS SELECT x.{n}{sep}{select} FROM (SELECT s.{n}, s.j::jsonb AS j "
            "FROM {json} s WHERE NOT EXISTS (SELECT FROM {bad} b WHERE b.n = s.{n}) OFFSET 0) x"
        ).format(stage=sql.Identifier("agentdb_bulk_stage"), n=_N, sep=sql.SQL(", " if exprs else ""),
                 select=select, json=_JSON, bad=_BAD))
        return self.columns

    # -- checks

    def _cast(self, index: int, alias: bool = True) -> sql.Composable:
        column = self.info.columns[self.columns[index]]
        text = sql.SQL("s.{}").format(sql.Identifier(f"c{index + 1}"))
        value = text if column.plain_text else sql.SQL("CAST({} AS {})").format(text, sql.SQL(column.type))
        return sql.SQL("{} AS {}").format(value, column.ident) if alias else value

    def typed(self, names: list[str] | None = None, *, include_updates: bool = True) -> sql.Composed:
        """The rows not set aside, with the named columns under their own names and types.

        Before :meth:`_materialize` the values are cast from the text stage;
        after it they are read from the typed copy, converted once.
        """
        wanted = [i for i, c in enumerate(self.columns) if names is None or c in names]
        kinds = sql.SQL(" AND b.kind <> 'update'") if include_updates else sql.SQL("")
        if self._typed:
            cols = sql.SQL("").join(sql.SQL(", s.{}").format(sql.Identifier(self.columns[i])) for i in wanted)
            source = _TYPED
        else:
            cols = sql.SQL("").join(sql.SQL(", ") + self._cast(i) for i in wanted)
            source = _STAGE
        # OFFSET 0: no condition of the caller is pushed below the filter, where a cast could meet a bad value.
        return sql.SQL("SELECT s.{n}{cols} FROM {source} s WHERE NOT EXISTS (SELECT FROM {bad} b WHERE b.n = s.{n}"
                       "{kinds}) OFFSET 0").format(n=_N, cols=cols, source=source, bad=_BAD, kinds=kinds)

    def _materialize(self) -> None:
        """Convert every value of the rows that passed the type and NOT NULL checks once, into a typed copy."""
        if ORDINAL in self.columns:
            return  # a table with a column of that name: keep casting from the text stage
        execute(self.connection, sql.SQL("CREATE TEMPORARY TABLE {} AS {}").format(
            sql.Identifier("agentdb_bulk_typed"), self.typed()))
        execute(self.connection, sql.SQL("ANALYZE {}").format(_TYPED))
        self._typed = True

    @contextmanager
    def _optional(self, what: str) -> Iterator[None]:
        """A pre-check that may fail to run (a permission, an expression that raises): the insert still checks."""
        savepoint = self.connection.begin_nested()
        try:
            yield
            savepoint.commit()
        except DBAPIError as exc:
            savepoint.rollback()
            _log.debug("bulk import: %s skipped [%s]: %s", what, sqlstate_of(exc),
                       safe_reason(str(exc.orig), self.names))

    def validate(self, *, reject_infinite: bool = True) -> None:
        execute(self.connection, sql.SQL("ANALYZE {}").format(_STAGE))
        checked = [(f"c{i + 1}", self.info.columns[c].type) for i, c in enumerate(self.columns)
                   if not self.info.columns[c].plain_text]
        names = [c for c in self.columns if not self.info.columns[c].plain_text]
        clock = time.monotonic()
        if checked:
            self._reject_types(checked, source=_STAGE, column_names=names)
        clock = _lap("types", clock)
        self._reject_nulls()
        self._materialize()
        clock = _lap("not null, typed copy", clock)
        self._reject_checks()
        clock = _lap("check constraints", clock)
        if self.info.partition_key and self.info.partition_key in self.columns and reject_infinite:
            self._reject_unroutable()
        self._reject_duplicates()
        clock = _lap("unique keys", clock)
        self._reject_foreign_keys()
        clock = _lap("foreign keys", clock)
        self._mark_conflicts()

    def _reject_types(self, checked: list[tuple[str, str]], *, source: sql.Identifier,
                      column_names: Sequence[str | None]) -> None:
        if self.server_version >= 160000:
            savepoint = self.connection.begin_nested()
            try:
                self._types_pg16(checked, source, column_names)
                savepoint.commit()
                return
            except DBAPIError as exc:  # an input function that cannot report softly: the exception way below
                savepoint.rollback()
                _log.debug("pg_input_is_valid failed (%s); using the PL/pgSQL check", sqlstate_of(exc))
        self._types_plpgsql(checked, source, column_names)

    def _types_pg16(self, checked: list[tuple[str, str]], source: sql.Identifier,
                    column_names: Sequence[str | None]) -> None:
        valid = sql.SQL(" AND ").join(
            sql.SQL("coalesce(pg_input_is_valid(s.{}, {}), true)").format(sql.Identifier(c), sql.Literal(t))
            for c, t in checked)
        values = sql.SQL(", ").join(
            sql.SQL("({}, {}::text, s.{}, {})").format(sql.Literal(i), sql.Literal(column_names[i]),
                                                        sql.Identifier(c), sql.Literal(t))
            for i, (c, t) in enumerate(checked))
        execute(self.connection, sql.SQL(
            "INSERT INTO {bad} (n, kind, col, sqlstate, reason) "
            "SELECT DISTINCT ON (s.{n}) s.{n}, 'reject', x.col, e.sql_error_code, e.message "
            "FROM (SELECT * FROM {src} s WHERE NOT ({valid})) s "
            "CROSS JOIN LATERAL (VALUES {values}) AS x(i, col, val, typ) "
            "CROSS JOIN LATERAL pg_input_error_info(x.val, x.typ) e "
            "WHERE x.val IS NOT NULL AND e.sql_error_code IS NOT NULL ORDER BY s.{n}, x.i "
            "ON CONFLICT (n) DO NOTHING"
        ).format(bad=_BAD, n=_N, src=source, valid=valid, values=values))

    def _types_plpgsql(self, checked: list[tuple[str, str]], source: sql.Identifier,
                       column_names: Sequence[str | None]) -> None:
        """One subtransaction per row: every value converted inside one exception block; ``i`` says which failed.

        A type with a modifier (``varchar(20)``) is converted by assignment, which
        enforces it as COPY does (an explicit cast would truncate); the others by
        an explicit cast, the cheaper form.  More than 90 values go in an array.
        """
        many = len(checked) > 90
        declare = sql.SQL(" ").join(sql.SQL("v{} {};").format(sql.SQL(str(i)), sql.SQL(t))
                                    for i, (_c, t) in enumerate(checked))

        def value(i: int, type_: str) -> sql.Composable:
            arg = sql.SQL("r[{}]").format(sql.SQL(str(i + 1))) if many else sql.SQL("a{}").format(sql.SQL(str(i)))
            return arg if "(" in type_ else sql.SQL("{}::{}").format(arg, sql.SQL(type_))

        steps = sql.SQL(" ").join(sql.SQL("i := {k}; v{i} := {value};").format(
            k=sql.SQL(str(i + 1)), i=sql.SQL(str(i)), value=value(i, t)) for i, (_c, t) in enumerate(checked))
        body = sql.SQL("DECLARE i int := 0; {declare} BEGIN {steps} RETURN NULL; "
                       "EXCEPTION WHEN others THEN RETURN ARRAY[i::text, SQLSTATE, SQLERRM]; END").format(
            declare=declare, steps=steps)
        params = sql.SQL("r text[]") if many else sql.SQL(", ").join(
            sql.SQL("a{} text").format(sql.SQL(str(i))) for i in range(len(checked)))
        raw = dbapi(self.connection)
        execute(self.connection, sql.SQL("DROP FUNCTION IF EXISTS {}").format(_ROW_ERROR))
        execute(self.connection, sql.SQL(
            "CREATE FUNCTION {}({}) RETURNS text[] LANGUAGE plpgsql AS {}").format(
            _ROW_ERROR, params, sql.Literal(body.as_string(raw))))
        values = sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c, _t in checked)
        call = sql.SQL("{}(ARRAY[{}]::text[])" if many else "{}({})").format(_ROW_ERROR, values)
        names = sql.SQL(", ").join(sql.Literal(n) for n in column_names)
        execute(self.connection, sql.SQL(
            "INSERT INTO {bad} (n, kind, col, sqlstate, reason) "
            "SELECT x.n, 'reject', (ARRAY[{names}]::text[])[x.e[1]::int], x.e[2], x.e[3] "
            "FROM (SELECT s.{n} AS n, {call} AS e FROM {src} s) x WHERE x.e IS NOT NULL "
            "ON CONFLICT (n) DO NOTHING"
        ).format(bad=_BAD, names=names, n=_N, call=call, src=source))

    def _reject_nulls(self) -> None:
        required = [(i, c) for i, c in enumerate(self.columns) if self.info.columns[c].notnull]
        if not required:
            return
        cases = sql.SQL(" ").join(sql.SQL("WHEN s.{} IS NULL THEN {}").format(
            sql.Identifier(f"c{i + 1}"), sql.Literal(c)) for i, c in required)
        any_null = sql.SQL(" OR ").join(sql.SQL("s.{} IS NULL").format(sql.Identifier(f"c{i + 1}"))
                                        for i, _c in required)
        execute(self.connection, sql.SQL(
            "INSERT INTO {bad} (n, kind, col, sqlstate, reason) SELECT x.n, 'reject', x.col, '23502', "
            "format('null value in column %I of relation %I violates not-null constraint', x.col, {table}) "
            "FROM (SELECT s.{n} AS n, CASE {cases} END AS col FROM {stage} s WHERE {any_null}) x "
            "ON CONFLICT (n) DO NOTHING"
        ).format(bad=_BAD, table=sql.Literal(self.info.name), n=_N, cases=cases, stage=_STAGE, any_null=any_null))

    def _reject_checks(self) -> None:
        checks = [c for c in self.info.checks if set(c.columns) <= set(self.columns)]
        if not checks:
            return
        needed = sorted({col for c in checks for col in c.columns})
        cases = sql.SQL(" ").join(sql.SQL("WHEN NOT ({}) THEN {}").format(
            sql.SQL(c.expression), sql.Literal(i)) for i, c in enumerate(checks))
        names = sql.SQL(", ").join(sql.Literal(c.name) for c in checks)
        columns = sql.SQL(", ").join(sql.Literal(", ".join(c.columns)) for c in checks)
        with self._optional("CHECK constraints"):
            execute(self.connection, sql.SQL(
                "INSERT INTO {bad} (n, kind, col, sqlstate, reason) SELECT x.{n}, 'reject', "
                "(ARRAY[{columns}]::text[])[x.k + 1], '23514', "
                "format('new row for relation %I violates check constraint %I', {table}, "
                "(ARRAY[{names}]::text[])[x.k + 1]) "
                "FROM (SELECT v.{n}, CASE {cases} END AS k FROM ({typed}) v) x WHERE x.k IS NOT NULL "
                "ON CONFLICT (n) DO NOTHING"
            ).format(bad=_BAD, n=_N, columns=columns, table=sql.Literal(self.info.name), names=names, cases=cases,
                     typed=self.typed(needed)))

    def _reject_unroutable(self) -> None:
        key = self.info.partition_key
        assert key is not None
        execute(self.connection, sql.SQL(
            "INSERT INTO {bad} (n, kind, col, sqlstate, reason) SELECT v.{n}, 'reject', {col}, '23514', "
            "format('no partition of relation %I found for row (an infinite %I)', {table}, {col}) "
            "FROM ({typed}) v WHERE NOT isfinite(v.{key}) ON CONFLICT (n) DO NOTHING"
        ).format(bad=_BAD, n=_N, col=sql.Literal(key), table=sql.Literal(self.info.name),
                 typed=self.typed([key]), key=sql.Identifier(key)))

    def months(self) -> list[datetime]:
        """The UTC months of the partition key of the rows still in (for the partitions to create)."""
        key = self.info.partition_key
        if key is None or key not in self.columns:
            return []
        column = self.info.columns[key]
        trunc = (sql.SQL("date_trunc('month', v.{}, 'UTC')") if column.type == "timestamp with time zone"
                 else sql.SQL("date_trunc('month', v.{})")).format(sql.Identifier(key))
        rows = execute(self.connection, sql.SQL(
            "SELECT DISTINCT {trunc} FROM ({typed}) v WHERE v.{key} IS NOT NULL AND isfinite(v.{key}) ORDER BY 1"
        ).format(trunc=trunc, typed=self.typed([key]), key=sql.Identifier(key)))
        found = []
        for (value,) in rows:
            if isinstance(value, datetime):
                found.append(value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC))
            else:
                found.append(datetime(value.year, value.month, 1, tzinfo=UTC))
        return found

    def _conflict_key(self) -> tuple[str, ...] | None:
        """The unique key ``--on-conflict update`` updates by: the primary key, else the first unique key."""
        for unique in self.info.uniques:
            if set(unique.columns) <= set(self.columns):
                return unique.columns
        return None

    def _reject_duplicates(self) -> None:
        target = self._conflict_key() if self.on_conflict == "update" else None
        for unique in self.info.uniques:
            if not set(unique.columns) <= set(self.columns):
                continue
            keys = [sql.Identifier(c) for c in unique.columns]
            key_list = sql.SQL(", ").join(keys)
            not_null = sql.SQL("TRUE") if unique.nulls_not_distinct else sql.SQL(" AND ").join(
                sql.SQL("v.{} IS NOT NULL").format(k) for k in keys)
            join = sql.SQL(" AND ").join(sql.SQL("d.{k} IS NOT DISTINCT FROM v.{k}").format(k=k) for k in keys)
            reason = f"duplicate key value violates unique constraint \"{unique.name}\" (repeated in the file)"
            with self._optional(f"unique key {unique.name} within the file"):
                execute(self.connection, sql.SQL(
                    "WITH v AS ({typed}), d AS (SELECT {keys}, min(v.{n}) AS first FROM v WHERE {not_null} "
                    "GROUP BY {keys} HAVING count(*) > 1) "
                    "INSERT INTO {bad} (n, kind, col, sqlstate, reason, ref) SELECT v.{n}, 'reject', {cols}, '23505', "
                    "{reason}, d.first FROM v JOIN d ON {join} WHERE v.{n} <> d.first ON CONFLICT (n) DO NOTHING"
                ).format(typed=self.typed(list(unique.columns)), keys=key_list, n=_N, not_null=not_null, bad=_BAD,
                         cols=sql.Literal(", ".join(unique.columns)), reason=sql.Literal(reason), join=join))
            if unique.columns == target:
                continue  # rows whose key exists are updated: marked last, see _mark_conflicts
            match = sql.SQL(" AND ").join(sql.SQL("t.{k} = v.{k}").format(k=k) for k in keys)
            if target is not None:
                same = sql.SQL(" AND ").join(sql.SQL("t.{k} IS NOT DISTINCT FROM v.{k}").format(k=sql.Identifier(c))
                                             for c in target)
                match = sql.SQL("{} AND NOT ({})").format(match, same)
            skip = self.on_conflict == "skip"
            kind = "skip" if skip else "reject"
            text = ("the key already exists in the table: skipped" if skip else
                    f"duplicate key value violates unique constraint \"{unique.name}\" (already in the table)")
            wanted = list(unique.columns) + list(target or ())
            with self._optional(f"unique key {unique.name} against the table"):
                execute(self.connection, sql.SQL(
                    "INSERT INTO {bad} (n, kind, col, sqlstate, reason) SELECT v.{n}, {kind}, {cols}, {state}, "
                    "{reason} FROM ({typed}) v WHERE {not_null} AND EXISTS (SELECT FROM {table} t WHERE {match}) "
                    "ON CONFLICT (n) DO NOTHING"
                ).format(bad=_BAD, n=_N, kind=sql.Literal(kind), cols=sql.Literal(", ".join(unique.columns)),
                         state=sql.Literal(None if skip else "23505"), reason=sql.Literal(text),
                         typed=self.typed(wanted), not_null=not_null, table=self.info.ident, match=match))

    def _reject_foreign_keys(self) -> None:
        for fk in self.info.foreign_keys:
            if not set(fk.columns) <= set(self.columns):
                continue
            keys = [sql.Identifier(c) for c in fk.columns]
            refs = [sql.Identifier(c) for c in fk.ref_columns]
            all_set = sql.SQL(" AND ").join(sql.SQL("v.{} IS NOT NULL").format(k) for k in keys)
            match = sql.SQL(" AND ").join(sql.SQL("r.{} = v.{}").format(r, k) for r, k in zip(refs, keys, strict=True))
            missing = sql.SQL("NOT EXISTS (SELECT FROM {} r WHERE {})").format(fk.ref_ident, match)
            if fk.ref_oid == self.info.oid and set(fk.ref_columns) <= set(self.columns):
                inner = sql.SQL(" AND ").join(sql.SQL("w.{} = v.{}").format(r, k) for r, k in zip(refs, keys,
                                                                                                   strict=True))
                missing = sql.SQL("{} AND NOT EXISTS (SELECT FROM ({}) w WHERE {})").format(
                    missing, self.typed(list(fk.ref_columns)), inner)
            violated = sql.SQL("({}) AND {}").format(all_set, missing)
            if fk.match_full and len(keys) > 1:
                some = sql.SQL(" OR ").join(sql.SQL("v.{} IS NOT NULL").format(k) for k in keys)
                violated = sql.SQL("({}) OR (({}) AND NOT ({}))").format(violated, some, all_set)
            reason = f"insert or update on table \"{self.info.name}\" violates foreign key constraint \"{fk.name}\""
            with self._optional(f"foreign key {fk.name}"):
                execute(self.connection, sql.SQL(
                    "INSERT INTO {bad} (n, kind, col, sqlstate, reason) SELECT v.{n}, 'reject', {cols}, '23503', "
                    "{reason} FROM ({typed}) v WHERE {violated} ON CONFLICT (n) DO NOTHING"
                ).format(bad=_BAD, n=_N, cols=sql.Literal(", ".join(fk.columns)), reason=sql.Literal(reason),
                         typed=self.typed(list(fk.columns)), violated=violated))

    def _mark_conflicts(self) -> None:
        target = self._conflict_key() if self.on_conflict == "update" else None
        if target is None:
            return
        keys = [sql.Identifier(c) for c in target]
        match = sql.SQL(" AND ").join(sql.SQL("t.{k} = v.{k}").format(k=k) for k in keys)
        execute(self.connection, sql.SQL(
            "INSERT INTO {bad} (n, kind, col, sqlstate, reason) SELECT v.{n}, 'update', NULL, NULL, "
            "'the key exists: the row is updated' FROM ({typed}) v WHERE EXISTS (SELECT FROM {table} t WHERE {match}) "
            "ON CONFLICT (n) DO NOTHING"
        ).format(bad=_BAD, n=_N, typed=self.typed(list(target)), table=self.info.ident, match=match))

    # -- results

    def bad(self) -> list[Bad]:
        rows = execute(self.connection, sql.SQL(
            "SELECT n, kind, col, sqlstate, reason, ref FROM {} ORDER BY n").format(_BAD))
        return [Bad(int(r[0]), str(r[1]), r[2], r[3], str(r[4]), None if r[5] is None else int(r[5])) for r in rows]

    def counts(self) -> dict[str, int]:
        rows = execute(self.connection, sql.SQL("SELECT kind, count(*) FROM {} GROUP BY kind").format(_BAD))
        return {str(k): int(c) for k, c in rows}

    # -- the insert

    def _insert_statement(self, lo: int | None = None, hi: int | None = None) -> sql.Composed:
        columns = [self.info.columns[c] for c in self.columns]
        overriding = sql.SQL(" OVERRIDING SYSTEM VALUE" if any(c.identity == "a" for c in columns) else "")
        where: sql.Composable = sql.SQL("")
        if lo is not None and hi is not None:
            where = sql.SQL(" AND s.{n} >= {lo} AND s.{n} < {hi}").format(n=_N, lo=sql.Literal(lo), hi=sql.Literal(hi))
        conflict: sql.Composable = sql.SQL("")
        target = self._conflict_key() if self.on_conflict == "update" else None
        if target is not None:
            others = [c for c in columns if c.name not in target and not c.generated]
            action = (sql.SQL("DO UPDATE SET ") + sql.SQL(", ").join(
                sql.SQL("{c} = EXCLUDED.{c}").format(c=c.ident) for c in others)) if others else sql.SQL("DO NOTHING")
            conflict = sql.SQL(" ON CONFLICT ({}) {}").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in target), action)
        if self._typed:
            values = sql.SQL(", ").join(sql.SQL("s.{}").format(c.ident) for c in columns)
        else:
            values = sql.SQL(", ").join(self._cast(i, alias=False) for i in range(len(self.columns)))
        return sql.SQL(
            "INSERT INTO {table} ({cols}){overriding} SELECT {values} FROM {source} s WHERE NOT EXISTS "
            "(SELECT FROM {bad} b WHERE b.n = s.{n} AND b.kind <> 'update'){where}{conflict}"
        ).format(table=self.info.ident, cols=sql.SQL(", ").join(c.ident for c in columns), overriding=overriding,
                 values=values, source=_TYPED if self._typed else _STAGE, bad=_BAD, n=_N, where=where,
                 conflict=conflict)

    def insert(self) -> int:
        """Insert every row not set aside; rows that still fail are found by halving and rejected.  Rows inserted."""
        last = int(one(self.connection, sql.SQL("SELECT coalesce(max({}), 0) FROM {}").format(_N, _STAGE)))
        return self._insert_range(1, last + 1, whole=True)

    def _insert_range(self, lo: int, hi: int, *, whole: bool = False) -> int:
        if lo >= hi:
            return 0
        savepoint = self.connection.begin_nested()
        try:
            inserted = execute_count(self.connection, self._insert_statement(None if whole else lo,
                                                                              None if whole else hi))
            savepoint.commit()
            return inserted
        except DBAPIError as exc:
            savepoint.rollback()
            state = sqlstate_of(exc)
            if state == "55P03":
                raise  # a lock timeout: the caller retries the whole insert
            if not state or state[:2] not in ROW_ERROR_CLASSES:
                raise BulkFailed(self.info.qualified, "insert", state,
                                 safe_reason(str(exc.orig), self.names)) from None
            rows = int(one(self.connection, sql.SQL(
                "SELECT count(*) FROM {stage} s WHERE s.{n} >= {lo} AND s.{n} < {hi} AND NOT EXISTS "
                "(SELECT FROM {bad} b WHERE b.n = s.{n} AND b.kind <> 'update')"
            ).format(stage=_STAGE, n=_N, lo=sql.Literal(lo), hi=sql.Literal(hi), bad=_BAD)))
            if rows == 0:
                return 0
            if hi - lo == 1 or rows == 1:
                n = lo if hi - lo == 1 else int(one(self.connection, sql.SQL(
                    "SELECT s.{n} FROM {stage} s WHERE s.{n} >= {lo} AND s.{n} < {hi} AND NOT EXISTS "
                    "(SELECT FROM {bad} b WHERE b.n = s.{n} AND b.kind <> 'update')"
                ).format(stage=_STAGE, n=_N, lo=sql.Literal(lo), hi=sql.Literal(hi), bad=_BAD)))
                self._reject_one(n, exc)
                return 0
            mid = (lo + hi) // 2
            return self._insert_range(lo, mid) + self._insert_range(mid, hi)

    def _reject_one(self, n: int, exc: BaseException) -> None:
        error = error_of(exc)
        column = None
        if error is not None:
            column = error.diag.column_name
            if column is None and error.diag.constraint_name:
                column = self._constraint_columns(error.diag.constraint_name)
        execute(self.connection, sql.SQL(
            "INSERT INTO {} (n, kind, col, sqlstate, reason) VALUES ({}, 'reject', {}, {}, {}) "
            "ON CONFLICT (n) DO UPDATE SET kind = 'reject', col = EXCLUDED.col, sqlstate = EXCLUDED.sqlstate, "
            "reason = EXCLUDED.reason"
        ).format(_BAD, sql.Literal(n), sql.Literal(column), sql.Literal(sqlstate_of(exc)),
                 sql.Literal(safe_reason(str(error or exc), self.names))))

    def _constraint_columns(self, constraint: str) -> str | None:
        for group in (self.info.checks, self.info.uniques, self.info.foreign_keys):
            for item in group:
                if item.name == constraint:
                    return ", ".join(item.columns)
        return None

    def drop(self) -> None:
        execute(self.connection, sql.SQL("DROP TABLE IF EXISTS {}, {}, {}, {}").format(_STAGE, _JSON, _BAD, _TYPED))
        execute(self.connection, sql.SQL("DROP SEQUENCE IF EXISTS {}").format(_SEQ))
        execute(self.connection, sql.SQL("DROP FUNCTION IF EXISTS {}").format(_ROW_ERROR))


def _lap(what: str, since: float) -> float:
    now = time.monotonic()
    _log.debug("bulk import: check %s %.2f s", what, now - since)
    return now


def _cut(chunk: Chunk, pos: int, length: int, offset: int, line: int) -> None:
    """Remove the record at ``pos`` from ``chunk``, keeping the anchors that map its bytes back to the file."""
    removed = bytes(chunk.data[pos:pos + length])
    del chunk.data[pos:pos + length]
    anchors = []
    for at, file_offset, file_line in chunk.anchors:
        if at < pos:
            anchors.append((at, file_offset, file_line))
        elif at >= pos + length:
            anchors.append((at - length, file_offset, file_line))
    anchors.append((pos, offset + length, line + removed.count(b"\n")))
    chunk.anchors = sorted({a[0]: a for a in anchors}.values())


def _shown(name: str) -> str:
    """A key or header name as it may be shown: only if it looks like a column name (never a value)."""
    ok = name.isascii() and name.replace("_", "a").isalnum() and len(name) <= 63 and not name[:1].isdigit()
    return repr(name) if ok else "(a name that is not an identifier)"
