"""PostgreSQL of the local stack: Debian's packages, one cluster under ``<stack>/postgres``."""

from __future__ import annotations

import glob
import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from infra.stack.common import (
    Echo,
    ServiceStatus,
    StackError,
    fail,
    port_open,
    read_pid,
    run,
    stop_pid,
)
from infra.stack.system import (
    apt_install,
    check_reachable,
    make_dirs,
    prepare_service_root,
    write_if_changed,
)

if TYPE_CHECKING:
    from infra.settings import Settings

NAME = "postgres"
SUPERUSER = "postgres"  # bootstrap superuser; local-socket only (trust)
START_TIMEOUT = 90


@dataclass(frozen=True)
class Paths:
    base: Path
    data: Path
    logs: Path
    log: Path
    sock: Path

    @property
    def pidfile(self) -> Path:
        return self.data / "postmaster.pid"


def paths(settings: Settings) -> Paths:
    base = (settings.stack.root / NAME).resolve()  # through a relocation symlink
    sock = base / "sock"
    # A Unix socket path must fit in 107 bytes; fall back to a short folder under /tmp.
    if len(str(sock)) + len(f"/.s.PGSQL.{settings.postgres.port}") > 100:
        digest = hashlib.sha256(str(base).encode()).hexdigest()[:10]
        sock = Path(tempfile.gettempdir()) / f"voxagent-pg-{digest}"
    logs = base / "logs"
    return Paths(base=base, data=base / "data", logs=logs, log=logs / "postgres.log", sock=sock)


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` that has initdb and pg_ctl."""
    found = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        bindir = Path(initdb).parent
        major = bindir.parent.name
        if (bindir / "pg_ctl").exists() and major.isdigit():
            found.append((int(major), bindir))
    return max(found)[1] if found else None


def ensure_installed(echo: Echo) -> Path:
    bindir = find_bin_dir()
    if bindir is None:
        # Debian's package also creates its own `main` cluster (port 5432); we leave it be.
        apt_install(["postgresql"], service=NAME, echo=echo)
        bindir = find_bin_dir()
    if bindir is None:
        fail(NAME, "apt-get installed postgresql but no /usr/lib/postgresql/*/bin/initdb exists")
    return bindir


def running_pid(settings: Settings) -> int | None:
    return read_pid(paths(settings).pidfile, "postgres")


def _config(settings: Settings, p: Paths) -> str:
    return (
        "# Written by `voxagent stack up`; rewritten on every run.\n"
        "listen_addresses = '127.0.0.1'\n"
        f"port = {settings.postgres.port}\n"
        f"unix_socket_directories = '{p.sock}'\n"
        # the platform and test sessions beside it (docs/operations.md, PostgreSQL connections)
        "max_connections = 300\n"
        "shared_buffers = 256MB\n"
    )


def _initdb(bindir: Path, p: Paths, user: str, echo: Echo) -> None:
    if any(p.data.iterdir()):
        fail(NAME, f"{p.data} is neither empty nor a PostgreSQL data folder; move it away")
    echo(f"[{NAME}] initdb {p.data} (first run only)...")
    run(
        [
            bindir / "initdb",
            "-D",
            p.data,
            "-U",
            SUPERUSER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-locale",
        ],
        service=NAME,
        what="initdb",
        user=user,
        cwd=p.base,
        timeout=300,
    )
    conf = p.data / "postgresql.conf"
    with conf.open("a") as fh:
        fh.write("\n# Settings of the Voxagent local stack\ninclude_if_exists = 'voxagent.conf'\n")


def up(settings: Settings, echo: Echo) -> None:
    bindir = ensure_installed(echo)
    user = prepare_service_root(settings, paths(settings).base, echo)
    p = paths(settings)
    make_dirs(user, p.base, p.logs, p.sock)
    make_dirs(user, p.data, mode=0o700)
    check_reachable(p.data, user, NAME)
    if not (p.data / "PG_VERSION").exists():
        _initdb(bindir, p, user, echo)
    changed = write_if_changed(
        p.data / "voxagent.conf", _config(settings, p), owner=user, mode=0o600
    )
    pid = running_pid(settings)
    pg_ctl: list[str | Path] = [
        bindir / "pg_ctl",
        "-D",
        p.data,
        "-l",
        p.log,
        "-w",
        "-t",
        str(START_TIMEOUT),
    ]
    if pid is not None and changed:
        echo(f"[{NAME}] configuration changed; restarting (pid {pid})...")
        run(
            [*pg_ctl, "-m", "fast", "restart"],
            service=NAME,
            what="pg_ctl restart",
            user=user,
            cwd=p.base,
            timeout=START_TIMEOUT + 30,
            log=p.log,
        )
    elif pid is None:
        if port_open(settings.postgres.port):
            fail(
                NAME,
                f"port {settings.postgres.port} on 127.0.0.1 is already taken by another "
                "process; stop it or set VOXAGENT_POSTGRES__PORT",
            )
        echo(f"[{NAME}] starting on 127.0.0.1:{settings.postgres.port}...")
        run(
            [*pg_ctl, "start"],
            service=NAME,
            what="pg_ctl start",
            user=user,
            cwd=p.base,
            timeout=START_TIMEOUT + 30,
            log=p.log,
        )
    if not _app_login_ok(settings):
        _ensure_role_and_database(settings, p)
        if not _app_login_ok(settings):
            fail(NAME, f"role {settings.postgres.user!r} still cannot log in over TCP", p.log)


def _app_login_ok(settings: Settings) -> bool:
    return _app_login_error(settings) is None


def _app_login_error(settings: Settings) -> str | None:
    import psycopg

    pg = settings.postgres
    try:
        with psycopg.connect(
            host="127.0.0.1",
            port=pg.port,
            user=pg.user,
            password=pg.password,
            dbname=pg.database,
            connect_timeout=3,
        ) as conn:
            conn.execute("SELECT 1").fetchone()
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def _ensure_role_and_database(settings: Settings, p: Paths) -> None:
    import psycopg
    from psycopg import sql

    pg = settings.postgres
    try:
        conn = psycopg.connect(
            host=str(p.sock),
            port=pg.port,
            user=SUPERUSER,
            dbname="postgres",
            autocommit=True,
            connect_timeout=5,
        )
    except psycopg.Error as exc:
        fail(NAME, f"cannot connect as {SUPERUSER!r} over the socket in {p.sock}: {exc}", p.log)
    with conn:
        role = sql.Identifier(pg.user)
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (pg.user,)).fetchone()
        verb = sql.SQL("ALTER ROLE" if exists else "CREATE ROLE")
        conn.execute(
            sql.SQL("{} {} LOGIN CREATEDB NOSUPERUSER PASSWORD {}").format(
                verb, role, sql.Literal(pg.password)
            )
        )
        has_db = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (pg.database,)
        ).fetchone()
        if not has_db:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(pg.database), role)
            )


def status(settings: Settings) -> ServiceStatus:
    pid = running_pid(settings)
    error = _app_login_error(settings) if port_open(settings.postgres.port) else "port closed"
    return ServiceStatus(NAME, settings.postgres.port, pid, error is None, error or "")


def down(settings: Settings, echo: Echo) -> None:
    pid = running_pid(settings)
    if pid is None:
        echo(f"[{NAME}] not running")
        return
    bindir = find_bin_dir()
    p = paths(settings)
    echo(f"[{NAME}] stopping (pid {pid})...")
    try:
        if bindir is None:
            raise StackError("pg_ctl not found")
        run(
            [bindir / "pg_ctl", "-D", p.data, "-m", "fast", "-w", "-t", "60", "stop"],
            service=NAME,
            what="pg_ctl stop",
            user=settings.stack.system_user,
            cwd=p.base,
            timeout=90,
        )
    except StackError as exc:
        echo(f"[{NAME}] pg_ctl stop failed ({exc}); sending SIGTERM")
        if not stop_pid(pid, timeout=30):
            fail(NAME, f"pid {pid} did not exit")
