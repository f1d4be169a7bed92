"""Health and integrity checks that know this schema: for people, for monitoring and for CI.

``check_health()`` runs about fifty checks, each under a stable id, in one
read-only transaction (:mod:`~agentdb.health.run`):

* :mod:`~agentdb.health.server` -- connections, long queries, idle transactions, blocked sessions,
  wraparound, replication, cache, vacuum, bloat, indexes, sequences, risky settings;
* :mod:`~agentdb.health.schema` -- the database against agentdb's own declaration: tables, functions,
  triggers, policies and grants, migrations, foreign-key indexes, NOT VALID constraints, orphan rows,
  personal columns hidden from analysts, ``audit_log`` append-only;
* :mod:`~agentdb.health.operations` -- the ledgers of partition maintenance, online changes, imports,
  the rollback archive, consent and erasure requests;
* :mod:`~agentdb.health.deep` -- amcheck on B-tree indexes and heaps (``deep=True``).

The report (:mod:`~agentdb.health.model`) renders as JSON (``as_dict``), Prometheus text
(:func:`render_prometheus`) and a self-contained HTML page (:func:`render_html`).
"""

from agentdb.health.html import render_html
from agentdb.health.ledger import DDL as HEALTH_DDL
from agentdb.health.ledger import ensure_health_ledger
from agentdb.health.model import CheckResult, HealthReport, Status
from agentdb.health.prometheus import render_prometheus
from agentdb.health.registry import CHECKS, Check, Param
from agentdb.health.run import check_health, list_checks, select_checks

__all__ = [
    "CHECKS",
    "HEALTH_DDL",
    "Check",
    "CheckResult",
    "HealthReport",
    "Param",
    "Status",
    "check_health",
    "ensure_health_ledger",
    "list_checks",
    "render_html",
    "render_prometheus",
    "select_checks",
]
