"""Rebuild the calls read model from the event store aside and compare it with the live one
(``voxagent replay calls --check``, DESIGN §5).

Every calls table (``projections.calls_view.TABLES``, the ``cost_daily`` rollup included) gets a
``<name>_rebuild`` twin; the Calls application's whole notification log is projected into them
by the same projector and view as the live path, then each pair is compared row for row
(``EXCEPT ALL`` both ways, every column). The rebuild is dropped afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psycopg import Connection
from psycopg.sql import SQL, Identifier

from projections.calls_view import TABLES, CallsRunner, table_names
from projections.pricing import Catalog, catalog_from_settings

PROJECTION = "calls_rebuild"
REBUILD = table_names("_rebuild")
Progress = Callable[[str], None]


@dataclass
class CallsReplayReport:
    events: int = 0
    seconds: float = 0.0
    position: int = 0
    rows: dict[str, tuple[int, int]] = field(default_factory=dict)  # table -> (live, rebuilt)
    # table -> (rows only live, rows only rebuilt)
    differences: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def equal(self) -> bool:
        return not self.differences


def _prepare(conn: Connection[Any]) -> None:
    with conn.transaction():
        for key, live in TABLES.items():
            rebuild = Identifier(REBUILD[key])
            conn.execute(SQL("DROP TABLE IF EXISTS {}").format(rebuild))
            conn.execute(
                SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(rebuild, Identifier(live))
            )
        conn.execute("DELETE FROM projection_tracking WHERE projection = %s", (PROJECTION,))


def _cleanup(conn: Connection[Any]) -> None:
    with conn.transaction():
        for name in REBUILD.values():
            conn.execute(SQL("DROP TABLE IF EXISTS {}").format(Identifier(name)))
        conn.execute("DELETE FROM projection_tracking WHERE projection = %s", (PROJECTION,))


def _count(conn: Connection[Any], query: Any) -> int:
    found = conn.execute(query).fetchone()
    return int(found[0]) if found else 0


def compare_calls(conn: Connection[Any], report: CallsReplayReport) -> CallsReplayReport:
    """Fill ``report`` with each table's row counts and differences (live vs rebuilt)."""
    for key, live in TABLES.items():
        a, b = Identifier(live), Identifier(REBUILD[key])
        count = SQL("SELECT count(*) FROM {}")
        report.rows[key] = (_count(conn, count.format(a)), _count(conn, count.format(b)))
        diff = SQL("SELECT count(*) FROM (SELECT * FROM {} EXCEPT ALL SELECT * FROM {}) d")
        only_live, only_rebuilt = _count(conn, diff.format(a, b)), _count(conn, diff.format(b, a))
        if only_live or only_rebuilt:
            report.differences[key] = (only_live, only_rebuilt)
    conn.rollback()
    return report


def replay_calls(
    container: Any,
    *,
    app: Any = None,
    catalog: Catalog | None = None,
    check_only: bool = True,
    progress: Progress | None = None,
    batch_size: int = 1000,
) -> CallsReplayReport:
    """Rebuild the calls read model aside from ``app`` (default ``container.calls``) and compare.

    Only ``check_only`` exists so far: swapping the rebuild in is the agents replay's job."""
    if not check_only:
        raise NotImplementedError("replay calls supports --check only (compare, change nothing)")
    say = progress or (lambda _msg: None)
    app = app if app is not None else container.calls
    catalog = catalog if catalog is not None else catalog_from_settings(container.settings)
    runner = CallsRunner(
        app, container.pool, catalog, PROJECTION, tables=REBUILD, batch_size=batch_size
    )
    report = CallsReplayReport()
    started = time.monotonic()

    def on_batch(events: int, position: int) -> None:
        report.events += events
        report.position = position

    runner.on_batch = on_batch
    with container.pool.connection() as conn:
        _prepare(conn)
        try:
            runner.run_until_caught_up()
            compare_calls(conn, report)
        finally:
            _cleanup(conn)
    report.seconds = time.monotonic() - started
    say(
        f"replayed {report.events} call events in {report.seconds:.1f}s; "
        + ", ".join(f"{k} {live}/{rebuilt}" for k, (live, rebuilt) in report.rows.items())
        + (f"; DIFFERENT: {report.differences}" if report.differences else "; equal")
    )
    return report
