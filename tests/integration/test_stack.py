"""The local stack (`voxagent stack up`): every service starts, answers, and `up` is idempotent.

These tests start the stack themselves (``up`` is a fast no-op when it already runs) and
leave it running for the tests after them.
"""

from __future__ import annotations

import array
import asyncio
import json
import math
import shutil
import subprocess
import time
import urllib.request
import uuid

import pytest

from infra.settings import Settings
from infra.stack import manager

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="module")
def started(settings: Settings) -> list[str]:
    lines: list[str] = []
    manager.up(settings, lines.append)
    return lines


def _pids(settings: Settings) -> dict[str, int | None]:
    return {s.name: s.pid for s in manager.status(settings)}


def test_every_service_answers_after_up(settings: Settings, started: list[str]) -> None:
    rows = manager.status(settings)
    assert [r.name for r in rows] == ["postgres", "clickhouse", "kafka", "livekit", "sipd"]
    for row in rows:
        assert row.answering, f"{row.name} does not answer: {row.detail}"
        assert row.pid is not None, f"{row.name} has no live pid file"


def test_second_up_is_a_noop(settings: Settings, started: list[str]) -> None:
    before = _pids(settings)
    lines: list[str] = []
    began = time.monotonic()
    manager.up(settings, lines.append)
    elapsed = time.monotonic() - began
    assert _pids(settings) == before
    assert not [line for line in lines if "starting" in line or "first run" in line], lines
    assert elapsed < 10, f"a second up took {elapsed:.1f}s"


def test_postgres_accepts_the_app_role(settings: Settings, started: list[str]) -> None:
    import psycopg

    pg = settings.postgres
    with psycopg.connect(
        host="127.0.0.1",
        port=pg.port,
        user=pg.user,
        password=pg.password,
        dbname=pg.database,
        connect_timeout=5,
    ) as conn:
        row = conn.execute(
            "SELECT current_user, current_database(), rolsuper, rolcreatedb, "
            "current_setting('fsync'), current_setting('synchronous_commit') "
            "FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    assert row == (pg.user, pg.database, False, True, "on", "on")


def test_clickhouse_answers_select_1(settings: Settings, started: list[str]) -> None:
    from clickhouse_driver import Client

    ch = settings.clickhouse
    client = Client(
        host="127.0.0.1",
        port=ch.port,
        user=ch.user,
        password=ch.password,
        database=ch.database,
        connect_timeout=5,
    )
    try:
        assert client.execute("SELECT 1") == [(1,)]
    finally:
        client.disconnect()


def test_kafka_round_trips_a_message(settings: Settings, started: list[str]) -> None:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    bootstrap = settings.kafka.bootstrap
    topic = f"stacktest.{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    try:
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        producer.produce(topic, key=b"k", value=b"hello stack")
        assert producer.flush(30) == 0
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"g-{topic}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([topic])
        try:
            deadline = time.monotonic() + 60
            message = None
            while message is None and time.monotonic() < deadline:
                polled = consumer.poll(1.0)
                if polled is not None and polled.error() is None:
                    message = polled
        finally:
            consumer.close()
        assert message is not None, "no message came back within 60s"
        assert (message.key(), message.value()) == (b"k", b"hello stack")
    finally:
        admin.delete_topics([topic])[topic].result(30)


def test_down_then_up_one_service(settings: Settings, started: list[str]) -> None:
    """`down --service clickhouse` stops it and keeps its data; `up` brings it back."""
    manager.down(settings, lambda _: None, ["clickhouse"])
    try:
        assert not manager.status(settings, ["clickhouse"])[0].answering
    finally:
        manager.up(settings, lambda _: None, ["clickhouse"])
    row = manager.status(settings, ["clickhouse"])[0]
    assert row.answering, row.detail
    assert all(r.answering for r in manager.status(settings))


def test_livekit_answers_its_health_check(settings: Settings, started: list[str]) -> None:
    url = f"http://127.0.0.1:{settings.livekit.port}/"
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert (resp.status, resp.read()) == (200, b"OK")


def test_sipd_answers_its_health_check(settings: Settings, started: list[str]) -> None:
    from infra.stack import sipd

    with urllib.request.urlopen(sipd.control_url(settings) + "/health", timeout=5) as resp:
        assert resp.status == 200
        assert json.loads(resp.read())["ok"] is True


def test_stack_status_lists_livekit(settings: Settings, started: list[str]) -> None:
    from click.testing import CliRunner

    from infra.stack.cli import stack

    result = CliRunner().invoke(stack, ["status"])
    assert result.exit_code == 0, result.output
    row = next(line.split() for line in result.output.splitlines() if line.startswith("livekit"))
    pid = manager.status(settings, ["livekit"])[0].pid
    assert row[:4] == ["livekit", str(settings.livekit.port), str(pid), "yes"]


def test_livekit_creates_lists_and_deletes_a_room(settings: Settings, started: list[str]) -> None:
    from livekit import api

    name = f"stacktest-{uuid.uuid4().hex[:12]}"
    lk = settings.livekit

    async def scenario() -> tuple[api.Room, list[str], list[str]]:
        client = api.LiveKitAPI(lk.url, lk.api_key, lk.api_secret.get_secret_value())
        try:
            room = await client.room.create_room(api.CreateRoomRequest(name=name, empty_timeout=60))
            listed = await client.room.list_rooms(api.ListRoomsRequest(names=[name]))
            await client.room.delete_room(api.DeleteRoomRequest(room=name))
            after = await client.room.list_rooms(api.ListRoomsRequest(names=[name]))
        finally:
            await client.aclose()
        return room, [r.name for r in listed.rooms], [r.name for r in after.rooms]

    room, listed, after = asyncio.run(scenario())
    assert room.name == name and room.sid.startswith("RM_")
    assert listed == [name]
    assert after == []


def test_livekit_refuses_a_wrong_secret(settings: Settings, started: list[str]) -> None:
    from livekit import api

    lk = settings.livekit

    async def scenario() -> None:
        client = api.LiveKitAPI(lk.url, lk.api_key, "not-the-secret-" + "x" * 32)
        try:
            await client.room.list_rooms(api.ListRoomsRequest())
        finally:
            await client.aclose()

    with pytest.raises(api.TwirpError) as raised:
        asyncio.run(scenario())
    assert raised.value.status == 401


def test_livekit_carries_audio_between_participants_on_loopback(
    settings: Settings, started: list[str]
) -> None:
    """WebRTC media flows through the server's loopback-only ICE (UDP on 127.0.0.1)."""
    from livekit import api, rtc

    lk = settings.livekit
    room_name = f"stacktest-{uuid.uuid4().hex[:12]}"
    rate, samples = 48000, 480  # 10 ms frames
    tone = array.array(
        "h", (int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(samples))
    ).tobytes()

    def token(identity: str) -> str:
        grants = api.VideoGrants(room_join=True, room=room_name)
        secret = lk.api_secret.get_secret_value()
        return (
            api.AccessToken(lk.api_key, secret).with_identity(identity).with_grants(grants).to_jwt()
        )

    async def scenario() -> list[bytes]:
        speaker, listener = rtc.Room(), rtc.Room()
        heard: list[bytes] = []
        enough = asyncio.Event()

        async def listen(track: rtc.Track) -> None:
            async for event in rtc.AudioStream(track, sample_rate=rate, num_channels=1):
                heard.append(bytes(event.frame.data))
                if len(heard) >= 50:
                    enough.set()
                    return

        tasks: list[asyncio.Task[None]] = []
        listener.on(
            "track_subscribed", lambda track, *_: tasks.append(asyncio.ensure_future(listen(track)))
        )
        await listener.connect(lk.url, token("listener"))
        await speaker.connect(lk.url, token("speaker"))
        try:
            source = rtc.AudioSource(rate, 1)
            track = rtc.LocalAudioTrack.create_audio_track("tone", source)
            options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            await speaker.local_participant.publish_track(track, options)
            deadline = time.monotonic() + 30
            while not enough.is_set() and time.monotonic() < deadline:
                await source.capture_frame(rtc.AudioFrame(tone, rate, 1, samples))
        finally:
            for task in tasks:
                task.cancel()
            await speaker.disconnect()
            await listener.disconnect()
        return heard

    heard = asyncio.run(scenario())
    assert len(heard) >= 50, f"only {len(heard)} audio frames arrived within 30s"
    pcm = array.array("h", b"".join(heard[-20:]))
    rms = math.sqrt(sum(x * x for x in pcm) / len(pcm))
    assert rms > 2000, f"the received audio is (nearly) silent: rms {rms:.0f}"


def test_espeak_ng_speaks(settings: Settings, started: list[str]) -> None:
    program = shutil.which(settings.providers.espeak_binary)
    assert program is not None, f"{settings.providers.espeak_binary} is not on PATH"
    wav = subprocess.run(
        [program, "--stdout", "hello"], capture_output=True, check=True, timeout=30
    ).stdout
    assert wav[:4] == b"RIFF" and len(wav) > 1000
