"""The in-process runner of the numbers read models, and their rebuild (``voxagent replay
numbers``): the same projector and view as the Faust app, driven from the numbers
application's notification log (DESIGN §5)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from psycopg import Connection
from psycopg.sql import SQL, Identifier

from projections.numbers import TABLES, is_numbers_event
from projections.numbers_view import LIVE, apply_number_envelopes
from projections.replay import Progress, ReplayReport, rebuild
from projections.runner import InProcessRunner

PROJECTION = "numbers"
REBUILD = {name: f"{name}_rebuild" for name in TABLES}


class NumbersRunner(InProcessRunner):
    """Follows the numbers application into ``numbers``, ``sip_trunks`` and
    ``provider_accounts`` (or the tables ``tables`` names)."""

    def __init__(
        self,
        app: Any,
        pool: Any,
        projection: str = PROJECTION,
        *,
        tables: Mapping[str, str] = LIVE,
        batch_size: int = 500,
        poll_seconds: float = 0.05,
    ) -> None:
        super().__init__(app, pool, projection, batch_size=batch_size, poll_seconds=poll_seconds)
        self.tables = dict(tables)

    def apply(self, envelopes: list[dict[str, Any]], conn: Any = None) -> int:
        if not envelopes:
            return 0
        position = int(envelopes[-1]["position"])
        mine = [e for e in envelopes if is_numbers_event(e)]
        if conn is not None:
            return apply_number_envelopes(
                conn, mine, self.projection, self.source, position, tables=self.tables
            )
        with self.pool.connection() as own:
            return apply_number_envelopes(
                own, mine, self.projection, self.source, position, tables=self.tables
            )


def _compare(conn: Connection[Any], report: ReplayReport) -> None:
    for live, twin in REBUILD.items():
        columns = SQL(", ").join(Identifier(c) for c in TABLES[live])
        for target, a, b in ((report.missing, twin, live), (report.extra, live, twin)):
            rows = conn.execute(
                SQL(
                    "SELECT id::text FROM (SELECT {c} FROM {a} EXCEPT SELECT {c} FROM {b}) d "
                    "ORDER BY 1"
                ).format(c=columns, a=Identifier(a), b=Identifier(b))
            ).fetchall()
            target.extend(f"{live}:{r[0]}" for r in rows)
        for name, attr in ((live, "live_rows"), (twin, "rebuilt_rows")):
            found = conn.execute(SQL("SELECT count(*) FROM {}").format(Identifier(name)))
            row = found.fetchone()
            setattr(report, attr, getattr(report, attr) + (int(row[0]) if row else 0))
    both = set(report.missing) & set(report.extra)
    report.different = sorted(both)
    report.missing = sorted(set(report.missing) - both)
    report.extra = sorted(set(report.extra) - both)
    conn.rollback()


def replay_numbers(
    container: Any, *, check_only: bool = False, progress: Progress | None = None
) -> ReplayReport:
    """Rebuild the numbers read models from the event store; compare, or swap them in."""
    say = progress or (lambda _msg: None)
    runner = NumbersRunner(container.numbers, container.pool, "numbers_rebuild", tables=REBUILD)
    report = ReplayReport()
    started = time.monotonic()

    def on_batch(events: int, _position: int) -> None:
        report.events += events

    runner.on_batch = on_batch

    def on_events(events: int) -> None:
        report.events += events

    with container.pool.connection() as conn:
        report.position = rebuild(
            conn, runner, REBUILD, "numbers_rebuild", swap=not check_only,
            inspect=lambda c: _compare(c, report), on_events=on_events,
        )  # fmt: skip
    report.swapped = not check_only
    report.seconds = time.monotonic() - started
    say(f"replay of numbers done: {report.events} events in {report.seconds:.1f}s")
    return report
