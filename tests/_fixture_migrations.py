"""Temporary copies of the migrations directory with fixture migrations, for tests.

``AGENTDB_SCRIPT_LOCATION`` points every command (and ``python NNN.py``) at the copy.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import agentdb.migrations

SOURCE = Path(agentdb.migrations.__file__).parent


def migrations_copy(root: Path, *, upto: str = "001") -> Path:
    """``root/migrations`` with env.py, script.py.mako and the project's migrations up to ``upto``."""
    target = root / "migrations"
    (target / "versions").mkdir(parents=True)
    for name in ("env.py", "script.py.mako"):
        shutil.copy(SOURCE / name, target / name)
    for path in sorted((SOURCE / "versions").glob("*.py")):
        if path.name[:3] <= upto:
            shutil.copy(path, target / "versions" / path.name)
    return target


def write_migration(
    location: Path, filename: str, *, revision: str, down_revision: str | None, upgrade: str,
    downgrade: str = "op.execute('SELECT 1')",
    doc: str = "Fixture migration.\n\nWhy: a test needs it.",
    extra: str = "",
) -> Path:
    """Write ``versions/<filename>`` with the given bodies (indented for you)."""
    body = f'''"""{doc}"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = {revision!r}
down_revision = {down_revision!r}
branch_labels = None
depends_on = None
{extra}

def upgrade() -> None:
{textwrap.indent(textwrap.dedent(upgrade).strip(), "    ")}


def downgrade() -> None:
{textwrap.indent(textwrap.dedent(downgrade).strip(), "    ")}


if __name__ == "__main__":
    from agentdb.runtime.script import main

    main(__file__)
'''
    path = location / "versions" / filename
    path.write_text(body)
    return path
