"""Rebuild the agents read model from the event store (``voxagent replay``, DESIGN §5).

The whole notification log is projected into a fresh ``agents_rebuild`` table with the same
projector and view as the live path. ``check_only`` compares it with the live table; otherwise
the rebuild replaces the live table atomically: under ``ACCESS EXCLUSIVE`` on ``agents`` the
rebuild catches up to the last notification, the tables are renamed and the old one dropped. A
live projector blocked on the lock then writes into the new table, version-guarded, so nothing
it applied is lost and nothing is applied twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psycopg import Connection
from psycopg.sql import SQL, Identifier

from projections.agents import AGENT_COLUMNS
from projections.runner import InProcessRunner

LIVE = "agents"
REBUILD = "agents_rebuild"
Progress = Callable[[str], None]


@dataclass
class ReplayReport:
    events: int = 0
    seconds: float = 0.0
    live_rows: int = 0
    rebuilt_rows: int = 0
    missing: list[str] = field(default_factory=list)  # in the rebuild, not live
    extra: list[str] = field(default_factory=list)  # live, not in the rebuild
    different: list[str] = field(default_factory=list)  # in both, some column differs
    swapped: bool = False
    position: int = 0

    @property
    def equal(self) -> bool:
        return not (self.missing or self.extra or self.different)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def _prepare(conn: Connection[Any]) -> None:
    with conn.transaction():
        conn.execute(SQL("DROP TABLE IF EXISTS {}").format(Identifier(REBUILD)))
        conn.execute(
            SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                Identifier(REBUILD), Identifier(LIVE)
            )
        )
        conn.execute("DELETE FROM projection_tracking WHERE projection = %s", (REBUILD,))


def _cleanup(conn: Connection[Any]) -> None:
    with conn.transaction():
        conn.execute(SQL("DROP TABLE IF EXISTS {}").format(Identifier(REBUILD)))
        conn.execute("DELETE FROM projection_tracking WHERE projection = %s", (REBUILD,))


def compare(conn: Connection[Any], report: ReplayReport) -> ReplayReport:
    """Fill ``report`` with the differences between the live and the rebuilt table."""
    differs = " OR ".join(f"l.{c} IS DISTINCT FROM r.{c}" for c in AGENT_COLUMNS if c != "id")
    rows = conn.execute(
        SQL(
            "SELECT coalesce(l.id, r.id)::text, l.id IS NULL, r.id IS NULL "
            "FROM {live} l FULL OUTER JOIN {rebuild} r ON l.id = r.id "
            "WHERE l.id IS NULL OR r.id IS NULL OR " + differs + " ORDER BY 1"
        ).format(live=Identifier(LIVE), rebuild=Identifier(REBUILD))
    ).fetchall()
    for ident, not_live, not_rebuilt in rows:
        target = report.missing if not_live else report.extra if not_rebuilt else report.different
        target.append(ident)
    for name, attr in ((LIVE, "live_rows"), (REBUILD, "rebuilt_rows")):
        found = conn.execute(SQL("SELECT count(*) FROM {}").format(Identifier(name))).fetchone()
        setattr(report, attr, int(found[0]) if found else 0)
    conn.rollback()
    return report


def _rename_indexes(conn: Connection[Any], old_names: dict[str, str]) -> None:
    """Give the new table's indexes the old table's names (matched by their definition)."""
    for name, definition in conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes "
        "WHERE schemaname = current_schema() AND tablename = %s",
        (LIVE,),
    ).fetchall():
        wanted = old_names.get(definition.split(" USING ", 1)[-1])
        if wanted and wanted != name:
            conn.execute(
                SQL("ALTER INDEX {} RENAME TO {}").format(Identifier(name), Identifier(wanted))
            )


def _swap(conn: Connection[Any], runner: InProcessRunner, report: ReplayReport) -> None:
    with conn.transaction():
        conn.execute(SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(Identifier(LIVE)))
        # everything a live projector could have applied is in the store by now
        while batch := runner.envelopes(runner.position_in(conn)):
            runner.apply(batch, conn)
            report.events += len(batch)
        report.position = runner.position_in(conn)
        old_names = {
            d.split(" USING ", 1)[-1]: n
            for n, d in conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes "
                "WHERE schemaname = current_schema() AND tablename = %s",
                (LIVE,),
            ).fetchall()
        }
        retired = f"{LIVE}_retired"
        conn.execute(SQL("DROP TABLE IF EXISTS {}").format(Identifier(retired)))
        conn.execute(
            SQL("ALTER TABLE {} RENAME TO {}").format(Identifier(LIVE), Identifier(retired))
        )
        conn.execute(
            SQL("ALTER TABLE {} RENAME TO {}").format(Identifier(REBUILD), Identifier(LIVE))
        )
        conn.execute(SQL("DROP TABLE {}").format(Identifier(retired)))
        _rename_indexes(conn, old_names)
        conn.execute("DELETE FROM projection_tracking WHERE projection = %s", (REBUILD,))
        found = conn.execute(SQL("SELECT count(*) FROM {}").format(Identifier(LIVE))).fetchone()
        report.live_rows = report.rebuilt_rows = int(found[0]) if found else 0
    report.swapped = True


def replay_agents(
    container: Any,
    *,
    check_only: bool = False,
    progress: Progress | None = None,
    every_seconds: float = 3.0,
    batch_size: int = 1000,
) -> ReplayReport:
    """Rebuild the agents read model from the event store; compare, or swap it in."""
    say = progress or (lambda _msg: None)
    app = container.agents
    runner = InProcessRunner(app, container.pool, REBUILD, table=REBUILD, batch_size=batch_size)
    report = ReplayReport()
    started = last = time.monotonic()

    def on_batch(events: int, position: int) -> None:
        nonlocal last
        report.events += events
        now = time.monotonic()
        if now - last >= every_seconds:
            rate = report.events / (now - started)
            say(f"replayed {report.events} events (position {position}, {rate:,.0f} events/s)")
            last = now

    runner.on_batch = on_batch
    with container.pool.connection() as conn:
        _prepare(conn)
        try:
            runner.run_until_caught_up()
            if check_only:
                report.position = runner.position_in(conn)
                compare(conn, report)
            else:
                _swap(conn, runner, report)
        finally:
            if check_only or not report.swapped:
                _cleanup(conn)
    report.seconds = time.monotonic() - started
    report.position = report.position or runner.position()
    say(
        f"replay done: {report.events} events in {report.seconds:.1f}s "
        f"({report.events_per_second:,.0f} events/s)"
        + (
            ""
            if not check_only
            else f"; live {report.live_rows} rows, rebuilt "
            f"{report.rebuilt_rows}, missing {len(report.missing)}, extra {len(report.extra)}, "
            f"different {len(report.different)}"
        )
    )
    return report
