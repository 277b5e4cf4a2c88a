"""sender_sequence: the HL7 sequence number protocol's last accepted number, per sender

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'sender_sequence',
        sa.Column('sender_application', sa.String(length=200), nullable=False),
        sa.Column('sender_facility', sa.String(length=200), nullable=False),
        sa.Column('last_accepted', sa.BigInteger(), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('sender_application', 'sender_facility'),
    )


def downgrade() -> None:
    op.drop_table('sender_sequence')
