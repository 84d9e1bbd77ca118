"""fitq's HTTP API (FastAPI). Never imports tensorflow, keras or ``worker``."""
