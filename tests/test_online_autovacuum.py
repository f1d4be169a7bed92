"""An autovacuum of the table does not make a lock step queue the application and give up: it is cancelled
first, as PostgreSQL itself would after ``deadlock_timeout`` (the test role is a superuser)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from conftest import server_dsn

from agentdb import online


@pytest.fixture
def fast_autovacuum() -> Iterator[None]:
    """Autovacuum looks at the databases every second (instead of every minute) during the test."""
    with psycopg.connect(server_dsn(), autocommit=True) as admin:
        admin.execute("ALTER SYSTEM SET autovacuum_naptime = '1s'")
        admin.execute("SELECT pg_reload_conf()")
        try:
            yield
        finally:
            admin.execute("ALTER SYSTEM RESET autovacuum_naptime")
            admin.execute("SELECT pg_reload_conf()")


def test_a_lock_step_cancels_an_autovacuum_of_its_table_instead_of_queueing_behind_it(
    database_url: str, fast_autovacuum: None
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        # A table autovacuum picks at once and then works on slowly (a cost limit of 1).
        conn.execute("CREATE TABLE slow_vacuum (id bigint PRIMARY KEY, v integer) WITH ("
                     "autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0, "
                     "autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1)")
        conn.execute("INSERT INTO slow_vacuum SELECT g, g FROM generate_series(1, 100000) g")
        conn.execute("UPDATE slow_vacuum SET v = v + 1 WHERE id % 2 = 0")
        deadline = time.monotonic() + 60
        while not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' "
                               "AND datname = current_database()").fetchone() != (0,):
            assert time.monotonic() < deadline, "autovacuum never started on the table"
            time.sleep(0.2)
    # Ten attempts of 200 ms each would all time out behind the slow autovacuum (it holds its lock for minutes).
    change = online.start("slow_vacuum", "add_check", database_url=database_url, name="slow_vacuum_v_positive",
                          condition="v > 0", settings=online.OnlineSettings(lock_retries=3))
    assert change.status == "completed"
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT convalidated FROM pg_constraint WHERE conname = 'slow_vacuum_v_positive'"
                            ).fetchone() == (True,)
