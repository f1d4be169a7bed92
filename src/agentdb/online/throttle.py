"""Throttle: whether the copy should wait before its next batch, and why.

Three checks, any of which pauses the copy while it says so:

* a physical replica's replay lag (``pg_stat_replication.replay_lag``) above
  ``max_replica_lag`` seconds (default 1 s) -- the copy's WAL must not leave
  replicas behind.  Logical walsenders (CDC, logical replication) are left
  out: a stalled consumer must not stall every online change;
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

__all__ = ["REPLICA_LAG_SQL", "lag_reason", "replica_lag", "throttle_reason"]

#: The physical replica furthest behind in replay, and its lag in seconds.  A logical walsender is connected to
#: a database (``pg_stat_activity.datname``); a physical one is not.
REPLICA_LAG_SQL = sql.SQL(
    "SELECT r.application_name, extract(epoch FROM r.replay_lag)::float8 FROM pg_catalog.pg_stat_replication r "
    "WHERE r.replay_lag IS NOT NULL AND NOT EXISTS (SELECT FROM pg_catalog.pg_stat_activity a "
    "WHERE a.pid = r.pid AND a.datname IS NOT NULL) ORDER BY r.replay_lag DESC LIMIT 1"
)


def replica_lag(connection: sa.Connection) -> tuple[str, float] | None:
    """The physical replica furthest behind in replay and its ``replay_lag`` in seconds, or None."""
    worst = execute(connection, REPLICA_LAG_SQL).first()
    if worst is None or worst[1] is None:
        return None
    return str(worst[0] or "?"), float(worst[1])


def lag_reason(name: str | None, lag: float | None, settings: OnlineSettings) -> str | None:
    """Why to wait, given the furthest-behind replica (a row of :data:`REPLICA_LAG_SQL`), or None."""
    if lag is None or settings.max_replica_lag is None or lag <= settings.max_replica_lag:
        return None
    return f"replica {name or '?'} replay lag {lag:.1f}s > {settings.max_replica_lag:g}s"


def throttle_reason(connection: sa.Connection, settings: OnlineSettings, check: ThrottleCheck | None = None
                    ) -> str | None:
    """Why the copy should wait now, or None.  Runs and ends (rolls back) its own short transaction."""
    try:
        if settings.max_replica_lag is not None:
            worst = replica_lag(connection)
            reason = lag_reason(*worst, settings) if worst is not None else None
            if reason is not None:
                return reason
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
