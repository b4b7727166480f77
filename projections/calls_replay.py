"""Rebuild the calls read model from the event store (``voxagent replay calls``, DESIGN §5).

Every calls table (``projections.calls_view.TABLES``, the ``cost_daily`` rollup included) gets a
``<name>_rebuild`` twin; the Calls application's whole notification log is projected into them
by the same projector and view as the live path (``projections.replay.rebuild``). With
``check_only`` each pair is then compared row for row (``EXCEPT ALL`` both ways, every column)
and the rebuild dropped. Otherwise the twins replace the live tables in ONE transaction
(``projections.replay.swap_rebuild``): the seven live tables are locked ``ACCESS EXCLUSIVE``
(``calls`` first, as the live view does), the rebuild catches up to the event store's head, the
tables are renamed, the old ones dropped and their index and constraint names restored. A live
projector blocked on the lock then writes into the new tables: call rows are version-guarded,
event rows keyed by ``(call_id, seq)`` and ``cost_daily`` is incremented only by usage rows
actually inserted, so nothing is lost and nothing is counted twice.
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
from projections.replay import rebuild

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
    swapped: bool = False

    @property
    def equal(self) -> bool:
        return not self.differences


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


def _count_swapped(conn: Connection[Any], report: CallsReplayReport) -> None:
    for key, live in TABLES.items():
        n = _count(conn, SQL("SELECT count(*) FROM {}").format(Identifier(live)))
        report.rows[key] = (n, n)


def replay_calls(
    container: Any,
    *,
    app: Any = None,
    catalog: Catalog | None = None,
    check_only: bool = True,
    progress: Progress | None = None,
    batch_size: int = 1000,
) -> CallsReplayReport:
    """Rebuild the calls read model aside from ``app`` (default ``container.calls``); compare
    it with the live one (``check_only``, the default) or swap it in."""
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

    def on_events(events: int) -> None:
        report.events += events

    runner.on_batch = on_batch
    with container.pool.connection() as conn:
        report.position = rebuild(
            conn,
            runner,
            {live: REBUILD[key] for key, live in TABLES.items()},
            PROJECTION,
            swap=not check_only,
            inspect=lambda c: compare_calls(c, report),
            on_events=on_events,
            before_commit=lambda c: _count_swapped(c, report),
        )
    report.swapped = not check_only
    report.seconds = time.monotonic() - started
    rows = ", ".join(f"{k} {live}/{rebuilt}" for k, (live, rebuilt) in report.rows.items())
    outcome = (
        "swapped in"
        if report.swapped
        else f"DIFFERENT: {report.differences}"
        if report.differences
        else "equal"
    )
    say(
        f"replayed {report.events} call events in {report.seconds:.1f}s "
        f"(position {report.position}); {rows}; {outcome}"
    )
    return report
