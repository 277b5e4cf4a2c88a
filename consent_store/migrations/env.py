from alembic import context
from sqlalchemy import text

from consent_store.tables import metadata

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    if connection.dialect.name == "postgresql":
        # several instances may start at once on one store: one migrates, the others wait and find it done
        connection.execute(text("SELECT pg_advisory_xact_lock(7215046337520147001)"))
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    context.run_migrations()
