"""Alembic environment and versions of fitq's schema."""
