"""Durable state: SQLAlchemy models, one engine per process, Alembic migrations."""
