"""audit (kind, seq): the latest entry of a kind in one index probe - the audit chain's last verification
(entries of kind `audit.verification`, shown on the console's feed board) and the console's last actions

Revision ID: 0010_audit_verification
Revises: 0008
"""
from alembic import op


revision = '0010_audit_verification'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_audit_kind', 'audit', ['kind', 'seq'])


def downgrade() -> None:
    op.drop_index('ix_audit_kind', table_name='audit')
