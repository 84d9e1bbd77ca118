"""fitq's data model: the database tables, the job spec, their types and enums.

Imports no other package of fitq and no infrastructure (no Celery, no settings, no
database engine), and never tensorflow or keras.
"""
