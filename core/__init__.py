"""Configuration, database plumbing and the domain errors every process shares."""
