"""journal indexes for the web console's message browser and feed board: by MSH-10, by patient, by sender and
by ACK code, each with the reception time, so a search over a million rows reads an index range

Revision ID: 0007_console
Revises: 0005
"""
from alembic import op


revision = '0007_console'
down_revision = '0005_history_rows'
branch_labels = None
depends_on = None

INDEXES = {
    "ix_journal_control_id": ["control_id"],
    "ix_journal_patient_time": ["patient_id", "received_at"],
    "ix_journal_sender_time": ["sender_application", "sender_facility", "received_at"],
    "ix_journal_ack_time": ["ack_code", "received_at"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "journal", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="journal")
