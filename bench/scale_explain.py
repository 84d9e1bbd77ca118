"""The plans of the API's hot queries (``bench.scale_api --explain``).

Fills a database as ``bench.scale_api`` does (100,000 jobs, 100,000 epoch rows), calls
each timed endpoint once in this process, captures the SELECTs the API sends (a
``before_cursor_execute`` listener), and prints each one's plan from the database
(``EXPLAIN QUERY PLAN`` on SQLite, ``EXPLAIN`` on PostgreSQL), flagging a plan that
reads a whole table of jobs or epochs.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

from bench.scale_api import Layout, endpoints, prepare

FULL_SCAN = re.compile(r"^SCAN (jobs|epoch_metrics)\b(?! USING)|Seq Scan on (jobs|epoch_metrics)")


def _plans(engine: Engine, captured: list[tuple[str, Any]]) -> list[tuple[str, list[str]]]:
    out = []
    with engine.connect() as conn:
        for sql, params in captured:
            if not sql.lstrip().upper().startswith("SELECT"):
                continue
            prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
            rows = conn.exec_driver_sql(prefix + sql, params).all()
            lines = [str(r[-1]) for r in rows]
            out.append((" ".join(sql.split()), lines))
    return out


def run_explain(db: str) -> dict[str, Any]:
    """Each endpoint's SELECTs and their plans; ``full_scans`` lists the bad ones."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from core.settings import Settings

    layout = Layout(100_000, 100_000)
    report: dict[str, Any] = {"endpoints": {}, "full_scans": []}
    with tempfile.TemporaryDirectory(prefix="fitq-explain-") as tmp:
        work = Path(tmp) / "explain"
        url, _ = prepare(db, layout, work)
        engine = create_engine(url)
        app = create_app(Settings(database_url=url, data_dir=work / "data"))
        captured: list[tuple[str, Any]] = []

        def record(conn: Any, _cursor: Any, sql: str, params: Any, *_: Any) -> None:
            if conn.engine is not engine:
                captured.append((sql, params))

        with TestClient(app) as client:
            event.listen(Engine, "before_cursor_execute", record)
            try:
                for name, path in endpoints(client, layout).items():
                    captured.clear()
                    assert client.get(path).status_code == 200, path
                    plans = _plans(engine, list(captured))
                    report["endpoints"][name] = plans
                    _print(db, name, plans, report["full_scans"])
            finally:
                event.remove(Engine, "before_cursor_execute", record)
        engine.dispose()
    return report


def _print(db: str, name: str, plans: list[tuple[str, list[str]]], bad: list[str]) -> None:
    print(f"[{db}] {name}", flush=True)
    for sql, lines in plans:
        print(f"    {sql[:160]}")
        for line in lines:
            flag = "  <-- full scan" if FULL_SCAN.search(line.strip()) else ""
            print(f"        {line}{flag}")
            if flag:
                bad.append(f"{name}: {line.strip()}")
