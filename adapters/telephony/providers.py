"""The telephony provider adapters of this deployment, by name (``twilio``, ``voximplant``,
``sip``).

Built empty in ``infra/bootstrap.py``; each adapter registers itself there with one line
(``providers.register(TwilioProvider(settings.telephony))``). An adapter that implements
``NumberProvider`` answers ``number_provider(name)``, one that implements ``VoiceProvider``
answers ``voice_provider(name)`` (one object may be both). Asking for a provider that is not
registered, or that cannot do what is asked, raises ``ProviderError("provider_not_configured")``
— never a ``KeyError`` — so the API answers with a clear code.
"""

from __future__ import annotations

import threading
from typing import Any

from commands.telephony import NumberProvider, ProviderError, VoiceProvider

NOT_CONFIGURED = "provider_not_configured"
_NUMBER_METHODS = ("search", "buy", "release")
_VOICE_METHODS = ("place_call", "transfer", "hang_up")


class TelephonyProviders:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._adapters: dict[str, Any] = {}

    def register(self, adapter: Any) -> None:
        """Add (or replace) the adapter named ``adapter.name``."""
        name = getattr(adapter, "name", None)
        if not isinstance(name, str) or not name:
            raise ValueError("a telephony adapter needs a name (twilio, voximplant, sip)")
        with self._lock:
            self._adapters[name] = adapter

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._adapters)

    def number_provider(self, name: str) -> NumberProvider:
        adapter = self._get(name, _NUMBER_METHODS, "search and buy numbers")
        provider: NumberProvider = adapter
        return provider

    def voice_provider(self, name: str) -> VoiceProvider:
        adapter = self._get(name, _VOICE_METHODS, "place or transfer calls")
        provider: VoiceProvider = adapter
        return provider

    def _get(self, name: str, methods: tuple[str, ...], what: str) -> Any:
        with self._lock:
            adapter = self._adapters.get(name)
        if adapter is None:
            known = ", ".join(self.names()) or "none"
            raise ProviderError(
                NOT_CONFIGURED,
                f"the telephony provider {name!r} is not configured in this deployment "
                f"(configured: {known})",
            )
        if not all(callable(getattr(adapter, m, None)) for m in methods):
            raise ProviderError(
                NOT_CONFIGURED, f"the telephony provider {name!r} cannot {what} here"
            )
        return adapter
