"""docs/events.md documents every event the domain records, with every field."""

import re

import pytest

from domain.agents import VoiceAgent
from domain.billing import BillingAccount
from domain.calls import Call
from domain.phone_numbers import PhoneNumber
from domain.provider_accounts import ProviderAccount
from domain.refused_calls import RefusedCall
from domain.sip_trunks import SipTrunk
from domain.webhooks import WebhookEndpoint
from infra.settings import REPO_ROOT

pytestmark = pytest.mark.unit

EVENTS = [
    VoiceAgent.Created, VoiceAgent.Updated, VoiceAgent.Archived,
    Call.Created, Call.Started, Call.TranscriptAdded, Call.ToolInvoked, Call.DtmfReceived,
    Call.TransferRequested, Call.TransferCompleted, Call.UsageRecorded, Call.TurnMetricsRecorded,
    Call.Ended, Call.ProviderStatusChanged,
    WebhookEndpoint.Created, WebhookEndpoint.Updated, WebhookEndpoint.SecretRotated,
    WebhookEndpoint.Disabled, WebhookEndpoint.Deleted,
    PhoneNumber.Created, PhoneNumber.Assigned, PhoneNumber.Unassigned, PhoneNumber.CallerIdSet,
    PhoneNumber.CallerIdCleared, PhoneNumber.Released, RefusedCall.Created,
    SipTrunk.Created, SipTrunk.Updated, SipTrunk.Deleted,
    ProviderAccount.Created, ProviderAccount.Updated, ProviderAccount.Reconnected,
    ProviderAccount.Disconnected,
    BillingAccount.Created, BillingAccount.PlanChanged, BillingAccount.SubscriptionCancelled,
    BillingAccount.PeriodStarted, BillingAccount.CreditsToppedUp, BillingAccount.CreditsGranted,
    BillingAccount.CreditsConsumed, BillingAccount.CreditsRefunded,
    BillingAccount.BudgetThresholdCrossed, BillingAccount.CapReached,
]  # fmt: skip
BASE_FIELDS = {"originator_id", "originator_version", "timestamp", "originator_topic", "space_id"}


def sections() -> dict[str, str]:
    doc = (REPO_ROOT / "docs" / "events.md").read_text()
    parts = re.split(r"^### ", doc, flags=re.MULTILINE)[1:]
    return {p.splitlines()[0].strip(): p for p in parts}


@pytest.mark.parametrize("event_class", EVENTS, ids=lambda c: c.TOPIC)
def test_every_event_and_field_is_documented(event_class):
    documented = sections()
    assert event_class.TOPIC in documented, f"docs/events.md lacks ### {event_class.TOPIC}"
    fields = set(event_class.__dataclass_fields__) - BASE_FIELDS
    assert fields, "the event declares its fields"
    for name in fields:
        assert f"`{name}`" in documented[event_class.TOPIC], f"{event_class.TOPIC}: {name}"


def test_no_documented_event_is_unknown_to_the_code():
    assert set(sections()) == {e.TOPIC for e in EVENTS}


def test_the_subscribable_catalogue_is_every_event_of_the_domain():
    """What webhook subscriptions accept (domain.catalogue) is exactly the documented list."""
    from domain.catalogue import event_classes

    assert set(event_classes()) == set(EVENTS)
