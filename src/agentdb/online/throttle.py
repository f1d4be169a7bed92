"""Throttle: whether the copy should wait before its next batch, and why.

Three checks, any of which pauses the copy while it says so:

* a replica's replay lag (``pg_stat_replication.replay_lag``) above
  ``max_replica_lag`` seconds -- the copy's WAL must not leave replicas behind;
* a boolean SQL expression given by the operator (``throttle_sql``), e.g.
  ``(SELECT count(*) FROM pg_stat_activity WHERE state = 'active') > 20``,
  evaluated in a READ ONLY transaction;
* a Python callable (``throttle=`` of :func:`agentdb.online.start`).

.. note::
   ``pg_stat_replication`` shows the lag columns only to superusers and
   members of ``pg_monitor``; for anyone else they are NULL and the lag check
   sees no replica.  ``replay_lag`` is NULL too when a replica is idle and
   caught up.
"""

from __future__ import annotations

import sqlalchemy as sa
from psycopg import sql

from agentdb.online._sql import execute
from agentdb.online.settings import OnlineSettings, ThrottleCheck

__all__ = ["REPLICA_LAG_SQL", "throttle_reason"]

#: The worst replay lag among the replicas, in seconds, with the replica's name.
REPLICA_LAG_SQL = sql.SQL(
    "SELECT application_name, extract(epoch FROM replay_lag)::float8 FROM pg_catalog.pg_stat_replication "
    "WHERE replay_lag IS NOT NULL ORDER BY replay_lag DESC LIMIT 1"
)


def throttle_reason(connection: sa.Connection, settings: OnlineSettings, check: ThrottleCheck | None = None
                    ) -> str | None:
    """Why the copy should wait now, or None.  Runs and ends (rolls back) its own short transaction."""
    try:
        if settings.max_replica_lag is not None:
            worst = execute(connection, REPLICA_LAG_SQL).first()
            if worst is not None and worst[1] is not None and float(worst[1]) > settings.max_replica_lag:
                return (f"replica {worst[0] or '?'} replay lag {float(worst[1]):.1f}s "
                        f"> {settings.max_replica_lag:g}s")
        if settings.throttle_sql:
            connection.commit()
            execute(connection, sql.SQL("SET TRANSACTION READ ONLY"))
            # The operator's own SQL, by design: it is the throttle condition they wrote.
            if execute(connection, sql.SQL("SELECT coalesce(({})::boolean, false)").format(
                    sql.SQL(settings.throttle_sql))).scalar():
                return f"throttle_sql is true: {settings.throttle_sql}"
    finally:
        connection.rollback()
    if check is not None:
        verdict = check()
        if verdict:
            return verdict if isinstance(verdict, str) else "the throttle check says wait"
    return None
