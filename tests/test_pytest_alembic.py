"""pytest-alembic's built-in checks: one head, upgrade to head, models match the DDL, up/down consistency."""

from pytest_alembic.tests import (  # noqa: F401 - collected by pytest
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
