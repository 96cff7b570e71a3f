"""Alembic environment: the engine is handed over by workers.store.db (no alembic.ini needed)."""

from __future__ import annotations

from alembic import context

from workers.store.models import Base

engine = context.config.attributes["engine"]

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
