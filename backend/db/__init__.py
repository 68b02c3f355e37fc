"""Backend database: SQLAlchemy 2 models, engine set-up, Alembic migrations and the store."""
