"""fitq's schema: the Alembic environment, its versions, and ``migrate`` to run them."""
