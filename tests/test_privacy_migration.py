"""Migration 010 as the seed documents use it: ``erase_user(user_id=...)``, the script form, and its downgrade.

The seed shows ``erase_user(user_id=123)`` in ``versions/010_gdpr_erasure.py``;
a module name cannot start with a digit, so the file is loaded by path, as
Alembic loads it.  Run as a script, it takes a user id.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import _privacy_db
import psycopg
import pytest
from _privacy_db import busy_user, found_in, person, rows, scalar

import agentdb
from agentdb.privacy import privacy_requests
from agentdb.privacy.script import main as script_main

#: Fixtures: a fresh copy of a database seeded once per session (see _privacy_db).
seeded_template = _privacy_db.seeded_template
seeded_url = _privacy_db.seeded_url

MIGRATION = Path(__file__).resolve().parents[1] / "src" / "agentdb" / "migrations" / "versions" / "010_gdpr_erasure.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("m010_gdpr_erasure", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _script(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python versions/010_gdpr_erasure.py ARGS...`` with ``DATABASE_URL`` set, as the seed documents run it."""
    return subprocess.run([sys.executable, str(MIGRATION), *args], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "DATABASE_URL": url})


def test_the_seed_form_erases_by_script_and_by_import(seeded_url: str, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    user = busy_user(seeded_url)
    who = person(seeded_url, user, rename="Wilhelmina Achterberg-Osei")

    script_main(argv=[str(user), "--dry-run", "--database-url", seeded_url])  # the script's main, in this process

    planned = capsys.readouterr()
    plan = json.loads(planned.out)
    assert (plan["status"], plan["dry_run"], plan["request_id"]) == ("planned", True, None) and plan["rows"] > 10
    assert privacy_requests(database_url=seeded_url) == [] and scalar(
        seeded_url, "SELECT count(*) FROM users WHERE id = %s", (user,)) == 1

    erased = _script(seeded_url, str(user))  # and as a user runs it

    assert erased.returncode == 0, erased.stderr
    done = json.loads(erased.stdout)
    assert (done["status"], done["proof"]["hits"], done["rows"]) == ("done", 0, plan["rows"] + plan[
        "audit_rows_written"])
    assert found_in(planned.out + planned.err + erased.stdout + erased.stderr, who) == []
    assert scalar(seeded_url, "SELECT count(*) FROM users WHERE id = %s", (user,)) == 0

    # The Python interface is the facade's; the seed's form is the 010 file's erase_user.
    assert [name for name in ("erase_user", "export_user", "place_hold", "release_hold", "reapply_erasures")
            if getattr(agentdb, name) is not getattr(agentdb.privacy, name)] == []
    # Imported, with DATABASE_URL, exactly as the seed shows: the same erasure, so nothing is left to do.
    module = _load()
    monkeypatch.setenv("DATABASE_URL", seeded_url)
    again = module.erase_user(user_id=user)
    assert (again.status, again.erased_by, again.rows) == ("nothing", done["request_id"], 0)
    other = scalar(seeded_url, "SELECT min(id) FROM users")
    assert module.erase_user(user_id=other).status == "done"
    assert [(r.user_id, r.status) for r in privacy_requests()] == [(other, "done"), (user, "done")]
    # An unknown id: one line on stderr, exit 2.
    with pytest.raises(SystemExit) as exit_:
        script_main(argv=["987654"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: unknown user id 987654: ") and err.count("\n") == 1


def _ledger(url: str) -> tuple[bool, bool]:
    return rows(url, "SELECT to_regclass('agentdb.privacy_requests') IS NOT NULL, "
                     "to_regclass('agentdb.privacy_settings') IS NOT NULL")[0]  # type: ignore[return-value]


def test_the_downgrade_drops_an_empty_ledger_and_keeps_one_that_holds_requests(migrated_url: str) -> None:
    assert _ledger(migrated_url) == (True, True)
    agentdb.downgrade("009", database_url=migrated_url)
    assert _ledger(migrated_url) == (False, False)  # empty: nothing to keep
    agentdb.upgrade(database_url=migrated_url)
    key = scalar(migrated_url, "SELECT pseudonym_key FROM agentdb.privacy_settings")
    rows(migrated_url, "INSERT INTO agentdb.privacy_requests (kind, user_id, status, deadline, agentdb_version) "
                       "VALUES ('erasure', 41, 'done', now() + interval '30 days', 'test')")

    agentdb.downgrade("009", database_url=migrated_url)

    # The ledger is what reapplies erasures after a restore: kept, with its key (pseudonyms stay the same).
    assert _ledger(migrated_url) == (True, True)
    assert agentdb.current(database_url=migrated_url).revisions == ("009",)
    assert rows(migrated_url, "SELECT user_id, status FROM agentdb.privacy_requests") == [(41, "done")]
    agentdb.upgrade(database_url=migrated_url)  # IF NOT EXISTS: the upgrade takes the kept ledger as it is
    assert scalar(migrated_url, "SELECT pseudonym_key FROM agentdb.privacy_settings") == key
    assert scalar(migrated_url, "SELECT count(*) FROM agentdb.privacy_requests") == 1
    with psycopg.connect(migrated_url) as conn:  # and the upgraded ledger still takes requests
        conn.execute("INSERT INTO agentdb.privacy_requests (kind, user_id, status, agentdb_version) "
                     "VALUES ('hold', 41, 'active', 'test')")
