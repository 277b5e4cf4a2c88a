"""patient.longest_visit: how far back a visit discharged after an instant can have begun, so that the visits
an instant falls in (Q_VISITS_AT) are found by a bounded walk whatever the instant (issue 13: an instant before
a long history read every visit discharged after it). Filled from the patients' episodes.

Revision ID: 0011_visits_at
Revises: 0010_audit_verification
"""
import sqlalchemy as sa
from alembic import op


revision = '0011_visits_at'
down_revision = '0010_audit_verification'
branch_labels = None
depends_on = None

# whole seconds rounded up, plus one, at least: as consent_store.store.visit_seconds (SQLite's ceil() needs
# its math functions compiled in; truncating and adding two is as safe)
_SECONDS = {
    "sqlite": "CAST((julianday(e.discharged_at) - julianday(e.started_at)) * 86400.0 AS INTEGER) + 2",
    "postgresql": "CAST(ceil(extract(epoch FROM e.discharged_at - e.started_at)) AS INTEGER) + 1",
}


def upgrade() -> None:
    op.add_column('patient', sa.Column('longest_visit', sa.Integer()))
    bind = op.get_bind()
    seconds = _SECONDS[bind.dialect.name]
    op.execute(f"UPDATE patient SET longest_visit = (SELECT max({seconds}) FROM episode e "
               "WHERE e.patient_id = patient.id AND e.started_at IS NOT NULL AND e.discharged_at IS NOT NULL "
               "AND e.discharged_at >= e.started_at)")


def downgrade() -> None:
    with op.batch_alter_table('patient') as batch:
        batch.drop_column('longest_visit')
