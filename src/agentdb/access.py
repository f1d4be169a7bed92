"""Access control: the application, read-only and analyst group roles and what they may do.

Three ``NOLOGIN`` group roles; login roles are made members of them
(``GRANT agentdb_app TO api_service``):

``agentdb_app``
    reads and writes data (``SELECT, INSERT, UPDATE, DELETE``), no DDL, no
    ``TRUNCATE``; append-only tables (``audit_log``) get ``SELECT, INSERT`` only.
``agentdb_readonly``
    ``SELECT`` on every application table.
``agentdb_analyst``
    ``SELECT`` on the columns the personal-data registry lets analysts read
    (:func:`agentdb.schema.personal_data.analyst_columns`): non-personal
    columns, and personal ones declared ``analyst=True`` (the pseudonymous
    ``analytics`` table).  Column grants, generated, never listed by hand.

Where each fact lives:

* the grants as they should be *now* are declared in
  :func:`agentdb.schema.entities.grants`, derived from the models and the
  registry; the drift test fails when a database at head differs, and
  ``agentdb new --autogenerate`` writes the migration that grants or revokes
  the difference (a new table's grants included);
* migration 005 created the roles and granted what the registry said *then*,
  written out in the file itself, so its effect never changes under it.

Roles are cluster-wide, grants are per database.  Migration 005 creates each
role only if missing (a second database on the same server reuses them),
marks a role it creates with a comment containing :data:`MARKER`, and records
in ``agentdb.access_roles`` which role names this database uses and whether it
created them.  Its downgrade revokes this database's grants, then drops a role
only when

* agentdb created it (the marker; a role an administrator made is never dropped),
* ``pg_shdepend`` shows no dependency on it in any database any more (no other
  database still grants it anything, and it owns nothing), and
* it has no members (dropping it would silently revoke a membership an
  administrator granted).

So the last database to downgrade drops the roles, whichever database created
them.  A role that is kept is reported with a ``NOTICE``.

No default privileges: ``ALTER DEFAULT PRIVILEGES`` applies only to objects
created by the role that set it, and cannot express column grants.

``AGENTDB_ROLE_PREFIX`` (default ``agentdb``) names the roles (``<prefix>_app``...):
at the upgrade of 005, and in the declaration autogenerate compares with.

.. warning::
   PostgreSQL 14 and older grant ``CREATE`` on schema ``public`` to
   ``PUBLIC``; migration 005 revokes it (recorded in ``agentdb.access_revoked``,
   restored by its downgrade), otherwise every role could run DDL there.
"""

from __future__ import annotations

from agentdb.schema.entities import APPEND_ONLY, MARKER, PURPOSES, grants, role_names

__all__ = ["APPEND_ONLY", "MARKER", "PURPOSES", "grants", "role_names"]
