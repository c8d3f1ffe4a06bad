"""Two memory figures, two names: the tree's peak in its own columns, the largest process's in peak_rss_bytes.

Revision ID: 0003_tree_peak
Revises: 0002_api_keys_retention
"""

from migrations import run_sql_file

revision = "0003_tree_peak"
down_revision = "0002_api_keys_retention"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0003_tree_peak.up.sql")


def downgrade() -> None:
    run_sql_file("0003_tree_peak.down.sql")
