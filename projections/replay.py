"""Rebuild the agents read model from the event store (``voxagent replay``, DESIGN §5).

The whole notification log is projected into a fresh ``agents_rebuild`` table with the same
projector and view as the live path. ``check_only`` compares it with the live table; otherwise
the rebuild replaces the live table atomically: under ``ACCESS EXCLUSIVE`` on ``agents`` the
rebuild catches up to the last notification, the tables are renamed and the old one dropped. A
live projector blocked on the lock then writes into the new table, version-guarded, so nothing
it applied is lost and nothing is applied twice.

``rebuild`` (build aside, then compare or swap) and ``swap_rebuild`` work on any set of tables
and any runner: the calls replay (``projections.calls_replay``) swaps its seven tables with them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from psycopg import Connection
from psycopg.sql import SQL, Identifier

from projections.agents import AGENT_COLUMNS
from projections.runner import InProcessRunner

LIVE = "agents"
REBUILD = "agents_rebuild"
Progress = Callable[[str], None]
Tables = Mapping[str, str]  # live table -> its rebuild


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


def prepare_rebuild(conn: Connection[Any], tables: Tables, projection: str) -> None:
    """Create an empty twin of every live table (``LIKE ... INCLUDING ALL``), fresh tracking."""
    with conn.transaction():
        for live, rebuild in tables.items():
            conn.execute(SQL("DROP TABLE IF EXISTS {}").format(Identifier(rebuild)))
            conn.execute(
                SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                    Identifier(rebuild), Identifier(live)
                )
            )
        conn.execute("DELETE FROM projection_tracking WHERE projection = %s", (projection,))


def drop_rebuild(conn: Connection[Any], tables: Tables, projection: str) -> None:
    with conn.transaction():
        for rebuild in tables.values():
            conn.execute(SQL("DROP TABLE IF EXISTS {}").format(Identifier(rebuild)))
        conn.execute("DELETE FROM projection_tracking WHERE projection = %s", (projection,))


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


def _index_names(conn: Connection[Any], table: str) -> dict[str, str]:
    """``{definition after USING: index name}`` of ``table``'s indexes."""
    rows = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes "
        "WHERE schemaname = current_schema() AND tablename = %s",
        (table,),
    ).fetchall()
    return {definition.split(" USING ", 1)[-1]: name for name, definition in rows}


def _rename_indexes(conn: Connection[Any], table: str, old_names: dict[str, str]) -> None:
    """Give the new table's indexes (and so their constraints) the old table's names."""
    for definition, name in _index_names(conn, table).items():
        wanted = old_names.get(definition)
        if wanted and wanted != name:
            conn.execute(
                SQL("ALTER INDEX {} RENAME TO {}").format(Identifier(name), Identifier(wanted))
            )


def swap_rebuild(
    conn: Connection[Any],
    runner: InProcessRunner,
    tables: Tables,
    projection: str,
    *,
    on_events: Callable[[int], None] = lambda _n: None,
    before_commit: Callable[[Connection[Any]], None] = lambda _c: None,
) -> int:
    """Replace every live table by its rebuild in ONE transaction; the position reached.

    The live tables are locked ``ACCESS EXCLUSIVE`` in the order given (a live view touches the
    first one first, so waiting for it cannot deadlock), the rebuild catches up to the event
    store's head, the tables are renamed, the old ones dropped and index names restored."""
    live_tables = list(tables)
    with conn.transaction():
        conn.execute(
            SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                SQL(", ").join(Identifier(t) for t in live_tables)
            )
        )
        # everything a live projector could have applied is in the store by now
        while batch := runner.envelopes(runner.position_in(conn)):
            runner.apply(batch, conn)
            on_events(len(batch))
        position = runner.position_in(conn)
        old_names = {live: _index_names(conn, live) for live in live_tables}
        for live, rebuild in tables.items():
            retired = Identifier(f"{live}_retired")
            conn.execute(SQL("DROP TABLE IF EXISTS {}").format(retired))
            conn.execute(SQL("ALTER TABLE {} RENAME TO {}").format(Identifier(live), retired))
            conn.execute(
                SQL("ALTER TABLE {} RENAME TO {}").format(Identifier(rebuild), Identifier(live))
            )
            conn.execute(SQL("DROP TABLE {}").format(retired))
        for live in live_tables:
            _rename_indexes(conn, live, old_names[live])
        conn.execute("DELETE FROM projection_tracking WHERE projection = %s", (projection,))
        before_commit(conn)
    return position


def rebuild(
    conn: Connection[Any],
    runner: InProcessRunner,
    tables: Tables,
    projection: str,
    *,
    swap: bool,
    inspect: Callable[[Connection[Any]], object],
    on_events: Callable[[int], None] = lambda _n: None,
    before_commit: Callable[[Connection[Any]], None] = lambda _c: None,
) -> int:
    """Project ``runner``'s whole log into fresh twins of ``tables`` (``{live: rebuild}``),
    then ``inspect`` them (compare with the live ones) and drop them, or (``swap``) put them
    in place of the live ones.
    ``runner`` must write into the twins under ``projection``. Returns the position reached."""
    prepare_rebuild(conn, tables, projection)
    swapped = False
    try:
        runner.run_until_caught_up()
        if not swap:
            position = runner.position_in(conn)
            inspect(conn)
            return position
        position = swap_rebuild(
            conn, runner, tables, projection, on_events=on_events, before_commit=before_commit
        )
        swapped = True
        return position
    finally:
        if not swapped:
            drop_rebuild(conn, tables, projection)


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

    def count_live(conn: Connection[Any]) -> None:
        found = conn.execute(SQL("SELECT count(*) FROM {}").format(Identifier(LIVE))).fetchone()
        report.live_rows = report.rebuilt_rows = int(found[0]) if found else 0

    def add_events(events: int) -> None:
        report.events += events

    with container.pool.connection() as conn:
        report.position = rebuild(
            conn,
            runner,
            {LIVE: REBUILD},
            REBUILD,
            swap=not check_only,
            inspect=lambda c: compare(c, report),
            on_events=add_events,
            before_commit=count_live,
        )
    report.swapped = not check_only
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
