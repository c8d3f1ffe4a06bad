"""OpenTelemetry log records in a partitioned table, linked to runs; one list of the partitioned tables.

Revision ID: 0005_log_records
Revises: 0004_workflow_scheduler
"""

from migrations import run_sql_file

revision = "0005_log_records"
down_revision = "0004_workflow_scheduler"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0005_log_records.up.sql")


def downgrade() -> None:
    run_sql_file("0005_log_records.down.sql")
