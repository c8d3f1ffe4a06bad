"""Live runs: spans without an end (running, lost), heartbeat and lost columns, the one list of statuses.

Revision ID: 0006_live_runs
Revises: 0005_log_records
"""

from migrations import run_sql_file

revision = "0006_live_runs"
down_revision = "0005_log_records"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0006_live_runs.up.sql")


def downgrade() -> None:
    run_sql_file("0006_live_runs.down.sql")
