"""projections of the patient state: episode, movement, consent_fact; the audit chain's genesis head

Revision ID: 0003
Revises: 0002

The rows were derived from each patient's JSON state; migration 0005 derives them (and the rest of the
history) from the documents, so nothing is backfilled here any more.
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
GENESIS = "0" * 64


def upgrade() -> None:
    op.create_table(
        'episode',
        sa.Column('patient_id', ID, sa.ForeignKey('patient.id'), nullable=False),
        sa.Column('visit', sa.String(length=200), nullable=False),
        sa.Column('nda', sa.String(length=200), nullable=True),
        sa.Column('patient_class', sa.String(length=50), nullable=True),
        sa.Column('uf', sa.String(length=200), nullable=True),
        sa.Column('admitted_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('discharged_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('cancelled', sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint('patient_id', 'visit'),
    )
    op.create_table(
        'movement',
        sa.Column('patient_id', ID, sa.ForeignKey('patient.id'), nullable=False),
        sa.Column('visit', sa.String(length=200), nullable=False),
        sa.Column('ordinal', sa.Integer(), nullable=False),
        sa.Column('movement_id', sa.String(length=200), nullable=True),
        sa.Column('event', sa.String(length=20), nullable=True),
        sa.Column('action', sa.String(length=20), nullable=True),
        sa.Column('start', sa.DateTime(timezone=True), nullable=True),
        sa.Column('historic', sa.Boolean(), nullable=False),
        sa.Column('nature', sa.String(length=50), nullable=True),
        sa.Column('uf_medical', sa.String(length=200), nullable=True),
        sa.Column('uf_care', sa.String(length=200), nullable=True),
        sa.Column('cancelled', sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint('patient_id', 'visit', 'ordinal'),
    )
    op.create_table(
        'consent_fact',
        sa.Column('patient_id', ID, sa.ForeignKey('patient.id'), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('item', sa.String(length=50), nullable=False),
        sa.Column('value', sa.String(length=200), nullable=False),
        sa.Column('code', sa.String(length=200), nullable=True),
        sa.Column('visit', sa.String(length=200), nullable=True),
        sa.Column('collected_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('cancelled', sa.Boolean(), nullable=False),
        sa.Column('source_msh10', sa.String(length=200), nullable=True),
        sa.Column('source_sender', sa.String(length=401), nullable=True),
        sa.Column('source_mapping', sa.String(length=200), nullable=True),
        sa.Column('collected_by', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('patient_id', 'seq', 'item'),
    )
    with op.batch_alter_table('consent_fact', schema=None) as batch_op:
        batch_op.create_index('ix_consent_fact_item', ['item', 'collected_at'], unique=False)

    conn = op.get_bind()
    # The chain's head exists from the start, so that every writer can lock it (PostgreSQL: several
    # instances) before anything else, and no two of them race to create it.
    if conn.execute(sa.text("SELECT count(*) FROM audit_head WHERE id = 1")).scalar() == 0:
        last = conn.execute(sa.text("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1")).scalar()
        conn.execute(sa.text("INSERT INTO audit_head (id, hash) VALUES (1, :h)"), {"h": last or GENESIS})


def downgrade() -> None:
    with op.batch_alter_table('consent_fact', schema=None) as batch_op:
        batch_op.drop_index('ix_consent_fact_item')
    op.drop_table('consent_fact')
    op.drop_table('movement')
    op.drop_table('episode')
