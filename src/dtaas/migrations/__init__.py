"""Alembic migrations of the platform's database."""
