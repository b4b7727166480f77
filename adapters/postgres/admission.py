"""``call_leases``: the PostgreSQL ``AdmissionStore`` (commands/admission.py).

An admit is one transaction that holds its space's row of ``admission_spaces`` (``SELECT ...
FOR UPDATE``, the row created on a space's first admit): every admit of one space queues on that
row, so counting its live leases and inserting one is atomic and a burst is admitted exactly up
to the limit; admits of other spaces lock other rows and never wait. Expired leases of the space
are deleted under the same lock. Release and renew touch only the call's own row.

Times are the database's clock (``clock_timestamp()``), the one clock every API process and
worker shares, so a lease expires at the same moment whoever looks.
"""

from __future__ import annotations

from typing import Any

from commands.admission import AdmissionStore, Full, Lease

_LEASE = "call_id, space_id, agent_id, granted_at, expires_at"


def _lease(row: tuple[Any, ...] | None) -> Lease | None:
    return None if row is None else Lease(*row)


class PostgresAdmissionStore(AdmissionStore):
    """``pool``: a psycopg ``ConnectionPool`` (autocommit off), e.g. ``Container.pool``."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def acquire(
        self,
        call_id: str,
        space_id: str,
        agent_id: str,
        lease_seconds: float,
        space_limit: int | None,
        agent_limit: int | None,
    ) -> Lease | Full:
        with self.pool.connection() as conn, conn.transaction():
            locked = conn.execute(
                "SELECT 1 FROM admission_spaces WHERE space_id = %s FOR UPDATE", (space_id,)
            ).fetchone()
            if locked is None:  # the space's first admit: make its row, then queue on it
                conn.execute(
                    "INSERT INTO admission_spaces (space_id) VALUES (%s) ON CONFLICT DO NOTHING",
                    (space_id,),
                )
                conn.execute(
                    "SELECT 1 FROM admission_spaces WHERE space_id = %s FOR UPDATE", (space_id,)
                )
            # the time once the lock is ours (not when we began to wait for it), and the call's
            # lease if it has one
            now, *held = conn.execute(
                f"SELECT clock_timestamp(), {_LEASE} FROM (VALUES (1)) AS one "
                "LEFT JOIN call_leases ON call_id = %s",
                (call_id,),
            ).fetchone()
            if held[0] is not None and held[4] > now:
                return Lease(*held)
            # the space's expired leases (and this call's, whatever its space) count no more
            conn.execute(
                "DELETE FROM call_leases WHERE (space_id = %s OR call_id = %s) "
                "AND expires_at <= %s",
                (space_id, call_id, now),
            )
            if space_limit is not None or agent_limit is not None:
                in_space, of_agent = conn.execute(
                    "SELECT count(*), count(*) FILTER (WHERE agent_id = %s) FROM call_leases "
                    "WHERE space_id = %s AND expires_at > %s",
                    (agent_id, space_id, now),
                ).fetchone()
                if space_limit is not None and in_space >= space_limit:
                    return "space"
                if agent_limit is not None and of_agent >= agent_limit:
                    return "agent"
            row = conn.execute(
                "INSERT INTO call_leases (call_id, space_id, agent_id, granted_at, expires_at) "
                "VALUES (%s, %s, %s, %s, %s + make_interval(secs => %s)) "
                f"RETURNING {_LEASE}",
                (call_id, space_id, agent_id, now, now, lease_seconds),
            ).fetchone()
            return Lease(*row)

    def lease(self, call_id: str) -> Lease | None:
        with self.pool.connection() as conn:
            return _lease(
                conn.execute(
                    f"SELECT {_LEASE} FROM call_leases "
                    "WHERE call_id = %s AND expires_at > clock_timestamp()",
                    (call_id,),
                ).fetchone()
            )

    def renew(self, call_id: str, lease_seconds: float) -> Lease | None:
        with self.pool.connection() as conn:
            return _lease(
                conn.execute(
                    "UPDATE call_leases "
                    "SET expires_at = clock_timestamp() + make_interval(secs => %s) "
                    "WHERE call_id = %s AND expires_at > clock_timestamp() "
                    f"RETURNING {_LEASE}",
                    (lease_seconds, call_id),
                ).fetchone()
            )

    def release(self, call_id: str) -> bool:
        with self.pool.connection() as conn:
            return (
                conn.execute("DELETE FROM call_leases WHERE call_id = %s", (call_id,)).rowcount > 0
            )
