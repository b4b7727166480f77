"""The telephony provider registry: adapters by name, a clear ProviderError otherwise."""

from __future__ import annotations

import pytest

from adapters.telephony.providers import TelephonyProviders
from commands.telephony import ProviderError

pytestmark = pytest.mark.unit


class NumbersOnly:
    name = "twilio"

    def search(self, creds, query):
        return []

    def buy(self, creds, e164, urls):
        raise NotImplementedError

    def release(self, creds, provider_id):
        return None


def test_an_empty_registry_says_the_provider_is_not_configured():
    with pytest.raises(ProviderError) as caught:
        TelephonyProviders().number_provider("twilio")
    assert caught.value.code == "provider_not_configured" and "none" in caught.value.message


def test_a_registered_adapter_answers_only_for_what_it_can_do():
    providers = TelephonyProviders()
    adapter = NumbersOnly()
    providers.register(adapter)
    assert providers.number_provider("twilio") is adapter and providers.names() == ["twilio"]
    with pytest.raises(ProviderError, match="cannot place or transfer calls"):
        providers.voice_provider("twilio")
    with pytest.raises(ProviderError, match="'sip' is not configured"):
        providers.voice_provider("sip")
