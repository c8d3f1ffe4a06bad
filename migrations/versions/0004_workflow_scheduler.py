"""Workflow engines and batch schedulers in typed columns: workflow, task, scheduler, job id, requested resources.

Revision ID: 0004_workflow_scheduler
Revises: 0003_tree_peak
"""

from migrations import run_sql_file

revision = "0004_workflow_scheduler"
down_revision = "0003_tree_peak"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0004_workflow_scheduler.up.sql")


def downgrade() -> None:
    run_sql_file("0004_workflow_scheduler.down.sql")
