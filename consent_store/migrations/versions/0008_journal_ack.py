"""journal.ack: the ACK as sent (built in the transaction that journals the message, so it is the very text
the sender got); journal.patient_ipp and journal.visit: what `pamgate journal list --ipp/--visit` finds,
indexed, with MSH-10 (rows written before stay NULL: their ACK was not kept)

Revision ID: 0008
Revises: 0005_history_rows
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0009'   # after the console's (0007) and the audit's user (0009)
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('journal') as batch:
        batch.add_column(sa.Column('ack', sa.Text(), nullable=True))
        batch.add_column(sa.Column('patient_ipp', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('visit', sa.String(length=200), nullable=True))
    # the console's 0007 makes the same index on control_id: made here only where it is absent
    if 'ix_journal_control_id' not in {i['name'] for i in sa.inspect(op.get_bind()).get_indexes('journal')}:
        op.create_index('ix_journal_control_id', 'journal', ['control_id'])
    op.create_index('ix_journal_patient_ipp', 'journal', ['patient_ipp'])
    op.create_index('ix_journal_visit', 'journal', ['visit'])


def downgrade() -> None:
    op.drop_index('ix_journal_visit', table_name='journal')
    op.drop_index('ix_journal_patient_ipp', table_name='journal')
    # ix_journal_control_id stays: 0007 (console) may own it, and it does the older schema no harm
    with op.batch_alter_table('journal') as batch:
        batch.drop_column('visit')
        batch.drop_column('patient_ipp')
        batch.drop_column('ack')
