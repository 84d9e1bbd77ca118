"""Shared domain of fitq: settings, tables, the job spec, errors and task names.

Imports neither ``api`` nor ``worker``, and never tensorflow or keras.
"""
