"""``voxagent``: the one command line of the platform."""

from __future__ import annotations

import sys
from typing import Any

import click

from infra.process import VoxagentGroup, require, settings_for, setup_logging, stop_event
from infra.settings import Settings


@click.group(cls=VoxagentGroup)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Voxagent: voice AI agents on an event-sourced backend."""
    ctx.obj = Settings()


@cli.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Create or upgrade the PostgreSQL read models and the ClickHouse tables."""
    from infra.bootstrap import bootstrap
    from infra.migrations import migrate_clickhouse, migrate_postgres

    settings = settings_for(ctx, "migrate")
    require(settings, "postgres", "clickhouse", "kafka")
    container = bootstrap(settings)
    try:
        applied = migrate_postgres(container.pool)
        container.agents  # creates the event store tables  # noqa: B018
        container.calls  # noqa: B018
        container.webhooks  # noqa: B018
        container.numbers  # noqa: B018
        container.billing  # noqa: B018
        migrate_clickhouse(container.clickhouse(), settings.clickhouse.database)
        from adapters.kafka.topics import domain_topics, ensure_topics

        ensure_topics(settings, domain_topics(settings))
    finally:
        container.close()
    click.echo(f"migrated ({', '.join(applied) or 'nothing new'})")


@cli.command()
@click.pass_context
def api(ctx: click.Context) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs)."""
    import uvicorn

    from adapters.api.app import create_app
    from infra.bootstrap import bootstrap

    settings = settings_for(ctx, "api")
    setup_logging(settings)
    ctx.invoke(migrate)
    container = bootstrap(settings)
    uvicorn.run(
        create_app(container),
        host=settings.api.host,
        port=settings.api.port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


@cli.command()
@click.pass_context
def relay(ctx: click.Context) -> None:
    """Publish the event store's new events to Kafka, in order, at least once."""
    from adapters.kafka.relay import run_relay
    from infra.bootstrap import bootstrap

    settings = settings_for(ctx, "relay")
    setup_logging(settings)
    container = bootstrap(settings)
    try:
        run_relay(container, stop=stop_event())
    finally:
        container.close()


@cli.command()
@click.pass_context
def projector(ctx: click.Context) -> None:
    """Run the Faust projectors: Kafka -> Postgres read models and ClickHouse."""
    from adapters.kafka.projectors import run_projectors
    from adapters.kafka.topics import domain_topics, ensure_topics_when_ready
    from infra.bootstrap import bootstrap

    settings = settings_for(ctx, "projector")
    setup_logging(settings)
    # Subscribing to a topic that does not exist yet would leave the consumer without
    # partitions until its next metadata refresh (minutes): create the topics first.
    if not ensure_topics_when_ready(settings, domain_topics(settings), stop_event()):
        return
    run_projectors(bootstrap(settings))


@cli.command()
@click.pass_context
def ingest(ctx: click.Context) -> None:
    """Run ingest: worker and provider signals (Kafka ingress topics) -> Call commands."""
    from adapters.kafka.ingest import run_ingest
    from adapters.kafka.topics import domain_topics, ensure_topics_when_ready
    from infra.bootstrap import bootstrap

    settings = settings_for(ctx, "ingest")
    setup_logging(settings)
    if not ensure_topics_when_ready(settings, domain_topics(settings), stop_event()):
        return
    run_ingest(bootstrap(settings))


@cli.group()
def simulate() -> None:
    """Produce simulated traffic (a demo, and the load of tests and benchmarks)."""


@simulate.command("calls")
@click.option("--calls", "calls", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--space", default="demo", show_default=True, help="The space of the calls.")
@click.option("--agent-id", type=click.UUID, default=None, help="Default: a new demo agent.")
@click.option("--seed", type=int, default=None, help="Make the run repeatable.")
@click.option(
    "--realtime/--fast",
    default=False,
    help="Pace calls like live ones (one transcript per second per speaker), or send at once.",
)
@click.pass_context
def simulate_calls_command(
    ctx: click.Context,
    calls: int,
    concurrency: int,
    space: str,
    agent_id: Any,
    seed: int | None,
    realtime: bool,
) -> None:
    """Produce realistic call signal streams onto the worker ingress topic."""
    from adapters.kafka.topics import domain_topics, ensure_topics
    from commands.agents import Actor, CreateAgent
    from domain.agent_config import AgentConfig
    from infra.bootstrap import bootstrap
    from infra.simulate import simulate_calls

    settings = settings_for(ctx, "simulate")
    require(settings, "kafka", "postgres")
    ensure_topics(settings, domain_topics(settings))
    container = bootstrap(settings)
    try:
        actor = Actor(space_id=space, subject="simulator")
        if agent_id is None:
            config = AgentConfig(
                name="Simulator demo agent", first_message="Hello! How can I help?"
            )
            agent_id = container.agents.create_agent(actor, CreateAgent(config=config)).id
            click.echo(f"created demo agent {agent_id} in space {space}")
        version = container.agents.get_agent(actor, agent_id).config_version
    finally:
        container.close()
    summary = simulate_calls(
        settings,
        calls=calls,
        concurrency=concurrency,
        space_id=space,
        agent_id=agent_id,
        agent_config_version=version,
        seed=seed,
        speed=1.0 if realtime else 0.0,
        progress=click.echo,
    )
    click.echo(summary.describe())


@cli.command()
@click.argument("read_model", type=click.Choice(["agents", "calls", "numbers"]))
@click.option("--check", is_flag=True, help="Rebuild aside and compare; change nothing.")
@click.pass_context
def replay(ctx: click.Context, read_model: str, check: bool) -> None:
    """Rebuild a read model from the event store aside, then swap it in atomically.

    ``--check`` only compares the rebuild with the live read model (exit 1 when they differ)."""
    from infra.bootstrap import bootstrap
    from projections.calls_replay import replay_calls
    from projections.numbers_replay import replay_numbers
    from projections.replay import replay_agents

    settings = settings_for(ctx, "replay")
    require(settings, "postgres")
    container = bootstrap(settings)
    try:
        if read_model == "calls":
            report: Any = replay_calls(container, check_only=check, progress=click.echo)
        elif read_model == "numbers":
            report = replay_numbers(container, check_only=check, progress=click.echo)
        else:
            report = replay_agents(container, check_only=check, progress=click.echo)
    finally:
        container.close()
    click.echo(str(report))
    if check and not report.equal:
        sys.exit(1)


@cli.command()
@click.pass_context
def up(ctx: click.Context) -> None:
    """Start the local stack, migrate, and run the platform in the background."""
    from infra import platform
    from infra.stack.manager import up as stack_up

    settings = ctx.ensure_object(Settings)
    stack_up(settings, click.echo)
    ctx.invoke(migrate)
    try:
        platform.start(settings, click.echo)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    base = f"http://{settings.api.host}:{settings.api.port}"
    click.echo(
        f"\nVoxagent is up.\n  API:      {base}/api\n  API docs: {base}/docs "
        f"(OpenAPI: {base}/openapi.json)\n  Health:   {base}/health\n"
        f"  Phones:   {settings.telephony.bridge_public_url}/streams/(twilio|voximplant)"
        f" (docs/telephony.md)\n"
        f"  Token:    .venv/bin/voxagent token --space demo\n"
        f'  Try:      curl -H "Authorization: Bearer $(.venv/bin/voxagent token --space demo)" '
        f"{base}/api/agents\n  Stop:     make down"
    )


@cli.command()
@click.option("--stack/--no-stack", default=True, help="Also stop Kafka, PostgreSQL, ClickHouse.")
@click.pass_context
def down(ctx: click.Context, stack: bool) -> None:
    """Stop the platform's processes (and the local stack)."""
    from infra import platform
    from infra.stack.manager import down as stack_down

    settings = ctx.ensure_object(Settings)
    platform.stop(settings, click.echo)
    if stack:
        stack_down(settings, click.echo)


@cli.command("config-doc")
@click.option("--check", is_flag=True, help="Fail when docs/configuration.md is out of date.")
def config_doc(check: bool) -> None:
    """Regenerate the settings table in docs/configuration.md."""
    from infra.config_doc import render
    from infra.settings import REPO_ROOT

    path = REPO_ROOT / "docs" / "configuration.md"
    current = path.read_text()
    updated = render(current)
    if check:
        if updated != current:
            raise click.ClickException(
                "docs/configuration.md is out of date: run voxagent config-doc"
            )
        return
    path.write_text(updated)
    click.echo(f"wrote {path}")


def _attach() -> None:
    from infra.bridge_cli import bridge
    from infra.devauth_cli import dev_issuer_command, token_command
    from infra.stack.cli import stack
    from infra.voice_cli import worker
    from infra.webhooks_cli import webhooks

    cli.add_command(stack)
    cli.add_command(webhooks)
    cli.add_command(worker)
    cli.add_command(bridge)
    cli.add_command(token_command)
    cli.add_command(dev_issuer_command)


def main() -> None:
    _attach()
    cli()


if __name__ == "__main__":
    main()
