"""The facade ``agentdb`` re-exports each capability's public names, and imports none of them until used."""

from __future__ import annotations

import importlib
import subprocess
import sys

import agentdb


def test_the_facade_exports_every_public_name_of_every_capability() -> None:
    for package in agentdb._PACKAGES:
        names = importlib.import_module(f"agentdb.{package}").__all__
        assert tuple(names) == agentdb._EXPORTS[package], f"agentdb._EXPORTS[{package!r}] is out of date"
    assert len(set(agentdb.__all__)) == len(agentdb.__all__), "a name is exported twice"


def test_every_exported_name_resolves_and_star_import_gives_them_all() -> None:
    for name in agentdb.__all__:
        assert getattr(agentdb, name) is not None, name
    scope: dict[str, object] = {}
    exec("from agentdb import *", scope)
    assert set(agentdb.__all__) <= set(scope)
    assert scope["upgrade"] is importlib.import_module("agentdb.migrate").upgrade
    assert scope["online"] is importlib.import_module("agentdb.online")


def test_an_unknown_name_is_an_attribute_error_naming_it() -> None:
    try:
        agentdb.no_such_thing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("agentdb.no_such_thing resolved")


def test_importing_the_facade_or_the_command_line_loads_no_capability() -> None:
    code = ("import sys, agentdb, agentdb.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[:2] in ("
            "['agentdb', 'migrate'], ['agentdb', 'bulk'], ['agentdb', 'health'], ['agentdb', 'privacy'], "
            "['agentdb', 'demo'], ['agentdb', 'governance']) or m == 'alembic'))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]", loaded
