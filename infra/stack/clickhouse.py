"""ClickHouse of the local stack: Debian's 18.16 server under ``<stack>/clickhouse``."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from infra.stack.common import (
    Echo,
    ServiceStatus,
    fail,
    port_open,
    read_pid,
    spawn,
    stop_pid,
    wait_until,
)
from infra.stack.system import (
    apt_install,
    check_reachable,
    make_dirs,
    prepare_service_root,
    render,
    write_if_changed,
)

if TYPE_CHECKING:
    from infra.settings import Settings

NAME = "clickhouse"
START_TIMEOUT = 90
STOP_TIMEOUT = 30


@dataclass(frozen=True)
class Paths:
    base: Path
    etc: Path
    data: Path
    logs: Path
    pidfile: Path

    @property
    def log(self) -> Path:
        return self.logs / "clickhouse-server.log"

    @property
    def err_log(self) -> Path:
        return self.logs / "clickhouse-server.err.log"

    @property
    def stdout_log(self) -> Path:
        return self.logs / "stdout.log"


def paths(settings: Settings) -> Paths:
    base = (settings.stack.root / NAME).resolve()  # through a relocation symlink
    return Paths(
        base=base,
        etc=base / "etc",
        data=base / "data",
        logs=base / "logs",
        pidfile=base / "clickhouse.pid",
    )


def server_argv() -> list[str] | None:
    """How to start the server binary: Debian's, or upstream's multi-call ``clickhouse``."""
    for path in ("/usr/bin/clickhouse-server", "/usr/sbin/clickhouse-server"):
        if os.access(path, os.X_OK):
            return [path]
    if os.access("/usr/bin/clickhouse", os.X_OK):
        return ["/usr/bin/clickhouse", "server"]
    found = shutil.which("clickhouse-server")
    return [found] if found else None


def ensure_installed(echo: Echo) -> list[str]:
    argv = server_argv()
    if argv is None:
        apt_install(["clickhouse-server", "clickhouse-client"], service=NAME, echo=echo)
        argv = server_argv()
    if argv is None:
        fail(NAME, "apt-get installed clickhouse-server but no server binary was found")
    return argv


def running_pid(settings: Settings) -> int | None:
    p = paths(settings)
    return read_pid(p.pidfile, str(p.etc / "config.xml"))


def _users_xml(settings: Settings) -> str:
    text = render("clickhouse-users.xml")
    ch = settings.clickhouse
    if ch.user == "default" and not ch.password:
        return text
    if ch.user == "default":  # a password for `default`: stored as its SHA-256 only
        digest = hashlib.sha256(ch.password.encode()).hexdigest()
        return text.replace(
            "<password></password>", f"<password_sha256_hex>{digest}</password_sha256_hex>", 1
        )
    digest = hashlib.sha256(ch.password.encode()).hexdigest()
    extra = (
        f"        <{ch.user}>\n"
        f"            <password_sha256_hex>{digest}</password_sha256_hex>\n"
        "            <networks><ip>::1</ip><ip>127.0.0.1</ip></networks>\n"
        "            <profile>default</profile>\n            <quota>default</quota>\n"
        f"        </{ch.user}>\n    </users>"
    )
    return text.replace("    </users>", extra, 1)


def _write_config(settings: Settings, p: Paths, user: str) -> bool:
    config = render(
        "clickhouse-config.xml",
        logs=p.logs,
        data=p.data,
        etc=p.etc,
        tcp_port=settings.clickhouse.port,
        http_port=settings.clickhouse.http_port,
    )
    changed = write_if_changed(p.etc / "config.xml", config, owner=user, mode=0o640)
    changed |= write_if_changed(p.etc / "users.xml", _users_xml(settings), owner=user, mode=0o640)
    write_if_changed(
        p.etc / "substitutions.xml", '<?xml version="1.0"?>\n<yandex/>\n', owner=user, mode=0o640
    )
    return changed


def _client(settings: Settings, database: str = "default", timeout: float = 3.0):  # type: ignore[no-untyped-def]
    from clickhouse_driver import Client

    ch = settings.clickhouse
    return Client(
        host="127.0.0.1",
        port=ch.port,
        user=ch.user,
        password=ch.password,
        database=database,
        connect_timeout=timeout,
        send_receive_timeout=timeout + 2,
        sync_request_timeout=timeout,
    )


def query_error(settings: Settings, query: str = "SELECT version()") -> str | None:
    """None when the server answers ``query``; else the first line of the error."""
    if not port_open(settings.clickhouse.port):
        return "port closed"
    client = _client(settings)
    try:
        client.execute(query)
    except Exception as exc:  # noqa: BLE001 - clickhouse-driver raises many unrelated types
        text = str(exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__
    finally:
        client.disconnect()
    return None


def up(settings: Settings, echo: Echo) -> None:
    argv = ensure_installed(echo)
    user = prepare_service_root(settings, paths(settings).base, echo)
    p = paths(settings)
    make_dirs(user, p.base, p.etc, p.data, p.logs)
    check_reachable(p.data, user, NAME)
    changed = _write_config(settings, p, user)
    pid = running_pid(settings)
    if pid is not None and changed:
        echo(f"[{NAME}] configuration changed; restarting (pid {pid})...")
        _stop(pid)
        pid = None
    if pid is None:
        for port in (settings.clickhouse.port, settings.clickhouse.http_port):
            if port_open(port):
                fail(
                    NAME,
                    f"port {port} on 127.0.0.1 is already taken by another process; stop "
                    "it or set VOXAGENT_CLICKHOUSE__PORT / VOXAGENT_CLICKHOUSE__HTTP_PORT",
                )
        echo(
            f"[{NAME}] starting on 127.0.0.1:{settings.clickhouse.port} "
            f"(http {settings.clickhouse.http_port})..."
        )
        spawn(
            [*argv, f"--config-file={p.etc / 'config.xml'}"],
            pidfile=p.pidfile,
            log=p.stdout_log,
            cwd=p.base,
            user=user,
        )
    started = running_pid(settings)
    wait_until(
        lambda: query_error(settings) is None,
        service=NAME,
        what="SELECT version()",
        timeout=START_TIMEOUT,
        log=_logs(p),
        alive=lambda: started is not None and running_pid(settings) == started,
    )
    error = query_error(settings, f"CREATE DATABASE IF NOT EXISTS `{settings.clickhouse.database}`")
    if error is not None:
        fail(NAME, f"cannot create database {settings.clickhouse.database!r}: {error}", _logs(p))


def _logs(p: Paths) -> list[Path]:
    """The logs most likely to say why the server failed, best first."""
    return [p.err_log, p.stdout_log]


def status(settings: Settings) -> ServiceStatus:
    pid = running_pid(settings)
    port = settings.clickhouse.port
    error = query_error(settings)
    return ServiceStatus(NAME, port, pid, error is None, error or "")


def _stop(pid: int) -> None:
    if not stop_pid(pid, timeout=STOP_TIMEOUT):
        fail(NAME, f"pid {pid} did not exit after SIGTERM and SIGKILL")


def down(settings: Settings, echo: Echo) -> None:
    pid = running_pid(settings)
    p = paths(settings)
    if pid is None:
        echo(f"[{NAME}] not running")
        p.pidfile.unlink(missing_ok=True)
        return
    echo(f"[{NAME}] stopping (pid {pid})...")
    _stop(pid)
    p.pidfile.unlink(missing_ok=True)
