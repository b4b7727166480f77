"""The webhook endpoint aggregate, subscriptions and the retry policy, as pure code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.catalogue import check_event_pattern
from domain.delivery import DEFAULT_SCHEDULE, RetryPolicy
from domain.errors import InvalidConfig
from domain.webhooks import EndpointDeleted, EndpointSpec, WebhookEndpoint, subscribes

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 25, tzinfo=UTC)


def an_endpoint(**spec) -> WebhookEndpoint:
    return WebhookEndpoint.create(
        "sp", EndpointSpec(url="https://hooks.example.com/x", **spec), "alice"
    )


def test_the_default_schedule_spans_more_than_a_day_in_eight_attempts():
    policy = RetryPolicy()
    assert policy.attempts == 8
    assert sum(DEFAULT_SCHEDULE) > 24 * 3600


@pytest.mark.parametrize("draw, factor", [(0.0, 0.9), (0.5, 1.0), (0.999999, 1.1)])
def test_jitter_stretches_each_delay_by_at_most_ten_percent(draw, factor):
    policy = RetryPolicy()
    for failed, base in enumerate(DEFAULT_SCHEDULE, start=1):
        assert policy.retry_delay(failed, draw) == pytest.approx(base * factor, rel=1e-5)


def test_after_the_last_scheduled_retry_the_delivery_has_failed_for_good():
    policy = RetryPolicy(schedule=(1.0, 2.0))
    assert policy.retry_delay(2, 0.5) == 2.0
    assert policy.retry_delay(3, 0.5) is None


def test_an_endpoint_is_disabled_only_after_failing_for_the_whole_window():
    policy = RetryPolicy(disable_after=timedelta(days=5))
    assert not policy.should_disable(None, T0)
    assert not policy.should_disable(T0, T0 + timedelta(days=4, hours=23))
    assert policy.should_disable(T0, T0 + timedelta(days=5))


@pytest.mark.parametrize(
    "patterns, event_type, expected",
    [
        (["*"], "call.ended", True),
        (["call.*"], "call.ended", True),
        (["call.*"], "agent.created", False),
        (["call.ended"], "call.ended", True),
        (["call.ended"], "call.started", False),
        (["agent.*", "call.ended"], "call.ended", True),
    ],
)
def test_subscriptions_match_exact_types_and_wildcards(patterns, event_type, expected):
    assert subscribes(patterns, event_type) is expected


@pytest.mark.parametrize("pattern", ["call", "call.", "Call.*", "*.ended", "calls.*", "call.nope"])
def test_unknown_or_malformed_patterns_are_refused(pattern):
    with pytest.raises(ValueError):
        check_event_pattern(pattern)


def test_updates_record_what_changed_and_no_change_records_nothing():
    endpoint = an_endpoint(event_types=["call.*"])
    assert not endpoint.update({"event_types": ["call.*"]}, "bob")
    assert endpoint.update({"enabled": False}, "bob")
    assert endpoint.disabled_reason == "disabled by an operator"
    assert endpoint.update({"enabled": True}, "bob")
    assert endpoint.disabled_reason is None
    events = endpoint.collect_events()
    assert [type(e).TOPIC for e in events] == [
        "webhook.endpoint_created", "webhook.endpoint_updated", "webhook.endpoint_updated",
    ]  # fmt: skip
    assert events[1].changed == ["enabled"]


def test_bad_changes_are_refused_before_any_event():
    endpoint = an_endpoint()
    with pytest.raises(InvalidConfig):
        endpoint.update({"url": "ftp://nope"}, "bob")
    with pytest.raises(InvalidConfig):
        endpoint.update({"secret": "x"}, "bob")
    assert len(endpoint.collect_events()) == 1


def test_rotation_bumps_the_secret_version_and_events_never_carry_a_secret():
    endpoint = an_endpoint()
    assert endpoint.rotate_secret(T0, "alice") == 2
    for event in endpoint.collect_events():
        assert "secret" not in {k for k in vars(event) if k != "endpoint"}
        assert set(event.endpoint) == {
            "url", "description", "event_types", "enabled", "secret_version", "disabled_reason",
        }  # fmt: skip


def test_disabling_twice_records_once_and_a_deleted_endpoint_takes_no_change():
    endpoint = an_endpoint()
    assert endpoint.disable("kept failing", T0, "system")
    assert not endpoint.disable("kept failing", T0, "system")
    endpoint.delete("alice")
    with pytest.raises(EndpointDeleted):
        endpoint.update({"description": "x"}, "alice")
