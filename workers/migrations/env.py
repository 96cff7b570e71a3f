"""Alembic environment: the engine is handed over by workers.store.db (no alembic.ini needed)."""

from __future__ import annotations

import importlib

from alembic import context

from workers.store.models import Base

# Autogenerate compares against every layer's tables. They are named, not imported: workers sits below
# workflows and beat (import-linter), and this file only ever runs inside Alembic.
for _models in ("workflows.models", "beat.models"):
    importlib.import_module(_models)

engine = context.config.attributes["engine"]

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
