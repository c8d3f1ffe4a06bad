"""API keys, the retention policy and partition helpers for retention.

Revision ID: 0002_api_keys_retention
Revises: 0001_initial
"""

from migrations import run_sql_file

revision = "0002_api_keys_retention"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0002_api_keys_retention.up.sql")


def downgrade() -> None:
    run_sql_file("0002_api_keys_retention.down.sql")
