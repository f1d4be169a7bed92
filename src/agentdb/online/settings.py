"""How an online change behaves: lock timeouts, batch sizing, throttling, verification.

The settings of a change are stored with it (``agentdb.online_changes.settings``)
so that a resume after a crash behaves like the run it continues; a Python
throttle callable is the one thing that cannot be stored, and is given again
to :func:`agentdb.online.resume`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from agentdb.runtime.locks import RetryPolicy

__all__ = ["OnlineSettings", "ThrottleCheck"]

#: A Python throttle check: return a reason (or True) to pause before the next batch, None/False to go on.
ThrottleCheck = Callable[[], str | bool | None]


@dataclass(frozen=True)
class OnlineSettings:
    """Times in seconds.

    ``lock_timeout`` and the retries apply to every step that takes a lock the
    application's queries also take (installing the capture trigger, the
    cut-over, adding or dropping a foreign key): a step waiting for such a lock
    queues every later query on the table behind it, so it waits briefly, gives
    up, backs off and tries again instead.
    """

    lock_timeout: float = 0.2
    lock_retries: int = 10
    retry_delay: float = 0.2
    max_retry_delay: float = 5.0
    #: The first batch; later batches are sized to take about ``batch_seconds``.
    batch_size: int = 5000
    min_batch_size: int = 100
    max_batch_size: int = 100_000
    #: A writer that changes a row of the batch being copied waits for that batch to commit (the capture
    #: trigger's upsert meets the batch's uncommitted row; a backfill's UPDATE holds the row's lock): the batch
    #: time bounds the writers' stall, and a loaded server overshoots it by half now and then.  0.5 s measured
    #: a 151 ms worst stall on 2M rows (benchmarks/bench_partition.py); 0.1 s up to 158 ms in a backfill
    #: (benchmarks/bench_online.py, 2026-11-21); 0.05 s keeps it well under 100 ms, and with a batch's few
    #: round trips (about 5 ms) it costs some 5% of the speed of 0.1 s.
    batch_seconds: float = 0.05
    #: Below PostgreSQL's default ``deadlock_timeout`` (1 s), so a batch that waits for a writer's
    #: row lock gives up first and retries: the writer is never the one a deadlock kills.
    batch_lock_timeout: float = 0.5
    #: ``synchronous_commit`` of a batch's transaction.  ``off`` spares every batch a WAL flush; a server
    #: crash can then lose the last batches, each together with its checkpoint (same transaction), so the
    #: resumed change redoes them.  ``on`` (or ``remote_apply``...) for whoever wants every batch durable.
    batch_synchronous_commit: str = "off"
    batch_retries: int = 50
    #: Pause before a batch while this SQL expression is true (evaluated in a read-only transaction).
    throttle_sql: str | None = None
    #: Pause while a replica's replay lag exceeds this many seconds (None: never); see :mod:`~.throttle`.
    max_replica_lag: float | None = 1.0
    throttle_poll: float = 1.0
    #: lock_timeout of a step that cannot run in a transaction (``CREATE INDEX CONCURRENTLY``): it blocks
    #: no one while it waits for older writers to finish, so it may wait longer; retried ``lock_retries`` times.
    concurrent_lock_timeout: float = 10.0
    #: Key ranges compared by the verification (count and checksum each).
    verify_ranges: int = 16
    #: Finish after the cut-over (drop the old table); False leaves that to :func:`agentdb.online.complete`.
    complete: bool = True
    #: At completion, keep the old table in the archive schema instead of dropping it.
    keep_old: bool = False

    def policy(self) -> RetryPolicy:
        return RetryPolicy(attempts=self.lock_retries, base_delay=self.retry_delay, max_delay=self.max_retry_delay)

    def batch_policy(self) -> RetryPolicy:
        return RetryPolicy(attempts=self.batch_retries, base_delay=0.05, max_delay=2.0)

    def worst_wait(self) -> float:
        """How long a contended step may wait in all before it gives up (every attempt times out)."""
        policy = self.policy()
        backoff = sum(min(policy.max_delay, policy.base_delay * 2 ** (n - 1)) for n in range(1, policy.attempts))
        return float(policy.attempts * self.lock_timeout + backoff)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OnlineSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def merged(self, **changes: Any) -> OnlineSettings:
        """A copy with the given fields replaced; ``None`` values are ignored."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
