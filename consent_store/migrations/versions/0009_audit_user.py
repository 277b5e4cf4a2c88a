"""audit.user_id (the professional an entry is about, copied from its payload) and the indexes the auditors'
search uses (by user, by time); the existing entries are filled from their payloads

Revision ID: 0009
Revises: 0007_console
"""
import json

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0007_console'
branch_labels = None
depends_on = None


def user_of(kind: str, payload: dict):
    """The same rule as the pipeline's when it writes an entry."""
    if kind == "decision":
        return (payload.get("request") or {}).get("user")
    if kind == "consent":
        return (payload.get("collected_by") or {}).get("id")
    if kind == "dmp.result":
        return (payload.get("user") or {}).get("id")
    return None


def upgrade() -> None:
    with op.batch_alter_table('audit') as batch:
        batch.add_column(sa.Column('user_id', sa.String(length=200), nullable=True))
    op.create_index('ix_audit_user', 'audit', ['user_id', 'seq'])
    op.create_index('ix_audit_at', 'audit', ['at'])
    conn = op.get_bind()
    audit = sa.table('audit', sa.column('seq'), sa.column('kind'), sa.column('payload'), sa.column('user_id'))
    rows = conn.execute(sa.select(audit.c.seq, audit.c.kind, audit.c.payload)
                        .where(audit.c.kind.in_(("decision", "consent", "dmp.result"))))
    updates = []
    for seq, kind, payload in rows:
        user = user_of(kind, json.loads(payload))
        if user:
            updates.append({"b_seq": seq, "b_user": str(user)[:200]})
    if updates:
        conn.execute(audit.update().where(audit.c.seq == sa.bindparam("b_seq"))
                     .values(user_id=sa.bindparam("b_user")), updates)


def downgrade() -> None:
    op.drop_index('ix_audit_at', 'audit')
    op.drop_index('ix_audit_user', 'audit')
    with op.batch_alter_table('audit') as batch:
        batch.drop_column('user_id')
