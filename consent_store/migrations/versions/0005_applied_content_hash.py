"""applied_message.content_hash: the hash of the message applied, so a resend under the same MSH-3/4/10 with
other content is told from a true duplicate (rows written before it stay NULL: unknown, taken as the same)

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('applied_message') as batch:
        batch.add_column(sa.Column('content_hash', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('applied_message') as batch:
        batch.drop_column('content_hash')
