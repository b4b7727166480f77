"""The command line names the service that is away and what to do, instead of a traceback."""

from __future__ import annotations

import psycopg
import pytest
from click.testing import CliRunner
from clickhouse_driver import errors as ch_errors
from confluent_kafka import KafkaError, KafkaException
from eventsourcing.persistence import OperationalError as StoreOperationalError

from infra.cli import cli
from infra.process import ServiceUnavailable, service_unavailable
from infra.settings import Settings
from tests.support.processes import settings_env

pytestmark = pytest.mark.unit

NOBODY = "127.0.0.1:1"  # a port nothing listens on: connections are refused at once


def away(**env: str) -> dict[str, str]:
    return {"VOXAGENT_POSTGRES__PORT": "1", "VOXAGENT_KAFKA__BOOTSTRAP": NOBODY,
            "VOXAGENT_CLICKHOUSE__PORT": "1", **env}  # fmt: skip


def test_a_refused_postgres_connection_names_postgresql_and_the_stack_command() -> None:
    settings = Settings(postgres={"port": 1})
    try:
        psycopg.connect(settings.postgres.conninfo())
    except psycopg.OperationalError as exc:
        failure = service_unavailable(exc, settings)
    assert failure is not None
    assert failure.service == "PostgreSQL"
    assert "PostgreSQL at 127.0.0.1:1 is not answering" in failure.message
    assert "voxagent stack up" in failure.message


def test_a_postgresql_without_free_slots_is_told_apart_from_one_that_is_down() -> None:
    exc = psycopg.OperationalError(
        "connection failed: FATAL:  remaining connection slots are reserved for "
        "non-replication superuser connections"
    )
    failure = service_unavailable(exc, Settings())
    assert failure is not None
    assert "refuses new connections: all its connection slots are taken" in failure.message
    assert "connection budget" in failure.message
    assert "voxagent stack up" not in failure.message


def test_an_event_store_error_caused_by_postgres_names_postgresql() -> None:
    try:
        try:
            raise psycopg.OperationalError("connection refused")
        except psycopg.OperationalError as exc:
            raise StoreOperationalError(str(exc)) from exc
    except StoreOperationalError as exc:
        failure = service_unavailable(RuntimeError("while saving"), Settings())
        assert failure is None  # not a connection failure at all
        failure = service_unavailable(exc, Settings())
    assert failure is not None and failure.service == "PostgreSQL"


def test_a_broker_transport_failure_names_kafka_and_its_setting() -> None:
    exc = KafkaException(KafkaError(KafkaError._TRANSPORT, "Failed to get metadata"))
    failure = service_unavailable(exc, Settings())
    assert failure is not None and failure.service == "Kafka"
    assert "VOXAGENT_KAFKA__BOOTSTRAP" in failure.message


def test_a_kafka_error_that_is_not_about_reaching_the_broker_is_left_alone() -> None:
    exc = KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "denied"))
    assert service_unavailable(exc, Settings()) is None


def test_a_clickhouse_network_error_found_among_the_causes_names_clickhouse() -> None:
    try:
        try:
            raise ch_errors.NetworkError("Connection refused (127.0.0.1:59000)")
        except ch_errors.NetworkError as exc:
            raise RuntimeError("migrating ClickHouse failed") from exc
    except RuntimeError as exc:
        failure = service_unavailable(exc, Settings())
    assert isinstance(failure, ServiceUnavailable) and failure.service == "ClickHouse"


@pytest.mark.parametrize(
    ("args", "service"),
    [
        (["simulate", "calls", "--calls", "1"], "Kafka"),
        (["replay", "agents", "--check"], "PostgreSQL"),
        (["replay", "calls", "--check"], "PostgreSQL"),
        (["migrate"], "PostgreSQL"),
    ],
)
def test_commands_say_which_service_is_away_and_exit_non_zero(
    args: list[str], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in away().items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert f"Error: {service} at " in result.output
    assert "voxagent stack up" in result.output
    assert "Traceback" not in result.output


def test_errors_that_are_not_about_a_service_keep_their_traceback() -> None:
    import click

    from infra.process import VoxagentGroup

    @click.group(cls=VoxagentGroup)
    @click.pass_context
    def group(ctx: click.Context) -> None:
        ctx.obj = Settings()

    @group.command()
    def broken() -> None:
        raise ValueError("a bug")

    result = CliRunner().invoke(group, ["broken"])
    assert isinstance(result.exception, ValueError)


def test_each_process_names_itself_to_postgresql() -> None:
    settings = Settings().for_process("relay")
    assert settings.postgres.application_name == "voxagent-relay"
    assert "application_name=voxagent-relay" in settings.postgres.conninfo()
    assert Settings().postgres.application_name == "voxagent"  # the copy changed, not the base


def test_child_processes_of_tests_get_the_sessions_agent_name_and_connection_name() -> None:
    base = Settings()
    mine = base.model_copy(
        update={
            "livekit": base.livekit.model_copy(update={"agent_name": "voxagent-test-1"}),
            "postgres": base.postgres.model_copy(update={"application_name": "voxagent_test_1"}),
        }
    )
    env = settings_env(mine)
    assert env["VOXAGENT_LIVEKIT__AGENT_NAME"] == "voxagent-test-1"
    assert env["VOXAGENT_POSTGRES__APPLICATION_NAME"] == "voxagent_test_1"
