"""Kafka of the local stack: one KRaft broker+controller, jars from Maven Central."""

from __future__ import annotations

import base64
import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.stack.common import (
    TEMPLATES,
    Echo,
    ServiceStatus,
    fail,
    port_open,
    read_pid,
    run,
    spawn,
    stop_pid,
    wait_until,
)
from infra.stack.system import apt_install, make_dirs, render, write_if_changed

if TYPE_CHECKING:
    from infra.settings import Settings

NAME = "kafka"
START_TIMEOUT = 120
STOP_TIMEOUT = 60
HEAP = ["-Xms256m", "-Xmx768m"]


@dataclass(frozen=True)
class Paths:
    base: Path
    libs: Path
    config: Path
    data: Path
    logs: Path

    @property
    def server_properties(self) -> Path:
        return self.config / "server.properties"

    @property
    def log4j(self) -> Path:
        return self.config / "log4j2.xml"

    @property
    def pidfile(self) -> Path:
        return self.base / "kafka.pid"

    @property
    def cluster_id_file(self) -> Path:
        return self.base / "cluster-id"

    @property
    def stdout_log(self) -> Path:
        return self.logs / "kafka.out"

    @property
    def server_log(self) -> Path:
        return self.logs / "server.log"


def paths(settings: Settings) -> Paths:
    base = settings.stack.root / NAME
    return Paths(
        base=base,
        libs=base / f"libs-{settings.kafka.version}",
        config=base / "config",
        data=base / "data",
        logs=base / "logs",
    )


def broker_port(settings: Settings) -> int:
    first = settings.kafka.bootstrap.split(",")[0].strip()
    _, _, port = first.rpartition(":")
    if not port.isdigit():
        fail(
            NAME, f"cannot read a port from VOXAGENT_KAFKA__BOOTSTRAP={settings.kafka.bootstrap!r}"
        )
    return int(port)


def running_pid(settings: Settings) -> int | None:
    return read_pid(paths(settings).pidfile, str(paths(settings).server_properties))


def _java() -> str:
    java = shutil.which("java")
    return java or "/usr/bin/java"


def ensure_tools(echo: Echo) -> None:
    if shutil.which("java") is None:
        apt_install(["openjdk-17-jre-headless"], service=NAME, echo=echo)
    if shutil.which("mvn") is None:
        apt_install(["maven"], service=NAME, echo=echo)


def ensure_jars(settings: Settings, echo: Echo) -> Path:
    """Resolve the broker's jars into ``libs-<version>`` unless they are already there."""
    p = paths(settings)
    version = settings.kafka.version
    if (p.libs / f"kafka_2.13-{version}.jar").exists():
        return p.libs
    ensure_tools(echo)
    echo(f"[{NAME}] resolving broker jars {version} from Maven Central (first run only)...")
    partial = p.base / f".libs-{version}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    run(
        [
            "mvn",
            "-B",
            "-q",
            "-f",
            TEMPLATES / "kafka-pom.xml",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}",
            "-DincludeScope=runtime",
            f"-Dkafka.version={version}",
        ],
        service=NAME,
        what=f"mvn dependency:copy-dependencies (kafka {version})",
        cwd=p.base,
        timeout=1200,
    )
    if not (partial / f"kafka_2.13-{version}.jar").exists():
        fail(NAME, f"mvn finished but {partial} has no kafka_2.13-{version}.jar")
    shutil.rmtree(p.libs, ignore_errors=True)
    partial.rename(p.libs)
    return p.libs


def _cluster_id(p: Paths) -> str:
    try:
        return p.cluster_id_file.read_text().strip()
    except FileNotFoundError:
        pass
    while True:  # Kafka's Uuid: base64url of 16 random bytes, no padding, not starting with '-'
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            break
    p.cluster_id_file.write_text(cid + "\n")
    return cid


def _write_config(settings: Settings, p: Paths) -> bool:
    props = render(
        "kafka-server.properties",
        broker_port=broker_port(settings),
        controller_port=settings.kafka.controller_port,
        log_dirs=p.data,
        partitions=settings.kafka.partitions,
    )
    changed = write_if_changed(p.server_properties, props)
    changed |= write_if_changed(p.log4j, render("kafka-log4j2.xml", logs=p.logs))
    return changed


def _format(settings: Settings, p: Paths, echo: Echo) -> None:
    if (p.data / "meta.properties").exists():
        return
    echo(f"[{NAME}] formatting KRaft storage in {p.data} (first run only)...")
    run(
        [
            _java(),
            f"-Dlog4j2.configurationFile={p.log4j}",
            "-cp",
            f"{p.libs}/*",
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            _cluster_id(p),
            "--config",
            p.server_properties,
            "--standalone",
            "--ignore-formatted",
        ],
        service=NAME,
        what="kafka-storage format",
        cwd=p.base,
        timeout=120,
        log=p.server_log,
    )


def _admin_error(settings: Settings, timeout: float = 3.0) -> str | None:
    """None when the broker answers a metadata request; else why not."""
    if not port_open(broker_port(settings)):
        return "port closed"
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    quiet = logging.getLogger("voxagent.stack.kafka.librdkafka")
    if not quiet.handlers:  # librdkafka logs every refused connection; we report it ourselves
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
    config: dict[str, Any] = {"bootstrap.servers": settings.kafka.bootstrap, "logger": quiet}
    admin = AdminClient(config)
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        return str(exc.args[0]) if exc.args else "metadata request failed"
    return None


def up(settings: Settings, echo: Echo) -> None:
    p = paths(settings)
    make_dirs(None, settings.stack.root, mode=0o755)
    make_dirs(None, p.base, p.config, p.data, p.logs)
    ensure_jars(settings, echo)
    changed = _write_config(settings, p)
    pid = running_pid(settings)
    if pid is not None and changed:
        echo(f"[{NAME}] configuration changed; restarting (pid {pid})...")
        _stop(pid)
        pid = None
    if pid is None:
        for port in (broker_port(settings), settings.kafka.controller_port):
            if port_open(port):
                fail(
                    NAME,
                    f"port {port} on 127.0.0.1 is already taken by another process; stop "
                    "it or set VOXAGENT_KAFKA__BOOTSTRAP / VOXAGENT_KAFKA__CONTROLLER_PORT",
                )
        _format(settings, p, echo)
        echo(
            f"[{NAME}] starting KRaft broker {settings.kafka.version} on "
            f"127.0.0.1:{broker_port(settings)}..."
        )
        spawn(
            [
                _java(),
                *HEAP,
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={p.log4j}",
                f"-Dkafka.logs.dir={p.logs}",
                "-cp",
                f"{p.libs}/*",
                "kafka.Kafka",
                p.server_properties,
            ],
            pidfile=p.pidfile,
            log=p.stdout_log,
            cwd=p.base,
        )
    started = running_pid(settings)
    wait_until(
        lambda: _admin_error(settings) is None,
        service=NAME,
        what="a metadata answer (AdminClient.list_topics)",
        timeout=START_TIMEOUT,
        log=[p.stdout_log, p.server_log],
        interval=0.5,
        alive=lambda: started is not None and running_pid(settings) == started,
    )


def status(settings: Settings) -> ServiceStatus:
    error = _admin_error(settings)
    return ServiceStatus(
        NAME, broker_port(settings), running_pid(settings), error is None, error or ""
    )


def _stop(pid: int) -> None:
    if not stop_pid(pid, timeout=STOP_TIMEOUT):
        fail(NAME, f"pid {pid} did not exit after SIGTERM and SIGKILL")


def down(settings: Settings, echo: Echo) -> None:
    pid = running_pid(settings)
    p = paths(settings)
    if pid is None:
        echo(f"[{NAME}] not running")
    else:
        echo(f"[{NAME}] stopping (pid {pid}, controlled shutdown)...")
        _stop(pid)
    p.pidfile.unlink(missing_ok=True)
