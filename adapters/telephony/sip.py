"""Our own SIP service (``sipd``, a Go process: ``docs/telephony.md``) as a voice provider: it
places, transfers and hangs up calls through SIP trunks, over its HTTP control API
(``http://<sip_host>:<sipd_control_port>``, ``Authorization: Bearer <sip_secret>``).

**Placing a call** (``POST /calls``): the caller-id number is one of our ``sip`` numbers; its
trunk gives the carrier's address, transport and digest credentials (the password is a side
record, read here and sent only to ``sipd``). The call is already open (its room, the agent
dispatched), so ``sipd`` gets the bridge stream URL and the call's stream token up front
(``OutboundCall.stream_url`` / ``stream_token``): when the callee answers it opens the stream
itself. Its answer carries the SIP Call-ID: the call's ``provider_call_id``.

**A running call** is known to ``sipd`` by *our* call id (its control routes are
``/calls/{call_id}/...``): ``transfer`` and ``hang_up`` take that id where other providers
take theirs (``adapters.telephony.calls.call_handle``). A ``cold`` transfer is a REFER;
a ``warm`` one is sipd's consult leg: it dials the target itself and answers once the target
answered (the agent now speaks with the target, the caller on hold) or failed (502
``transfer_failed``: raised as ``ProviderError("transfer_failed")``, the agent keeps the
caller); when the agent's stream ends sipd joins caller and target. Either way ``sipd``
reports the outcome to ``/api/sip/transfer``.

No number provider: SIP numbers are the space's own, recorded with ``POST
/api/telephony/numbers`` and a trunk. Calls are synchronous (run them in a thread).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any, Protocol
from uuid import UUID

import httpx

from commands.numbers import NumberRoute, TrunkSecrets
from commands.telephony import (
    OutboundCall,
    PlacedCall,
    ProviderCredentials,
    ProviderError,
    ProviderName,
    TransferMode,
)
from domain.sip_trunks import SipTrunk
from infra.settings import TelephonySettings

log = logging.getLogger(__name__)
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
SIP_URI = re.compile(r"^sips?:[^\s<>&\"']{1,250}$")
CODECS = ["PCMU", "PCMA"]


class SipTrunks(Protocol):
    """What the provider needs of the numbers context (``NumbersApplication``)."""

    def route(self, e164: str) -> NumberRoute | None: ...

    def trunk_of(self, trunk_id: UUID) -> SipTrunk | None: ...

    def trunk_secret(self, trunk_id: UUID) -> TrunkSecrets | None: ...


def control_url(settings: TelephonySettings) -> str:
    host = settings.sip_host
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{host}:{settings.sipd_control_port}"


class SipVoiceProvider:
    """``VoiceProvider`` for SIP trunks through ``sipd``. ``trunks`` is called when a call is
    placed (lazily: building the provider connects to nothing)."""

    name: ProviderName = "sip"

    def __init__(self, settings: TelephonySettings, trunks: Callable[[], SipTrunks]) -> None:
        self.settings = settings
        self._trunks = trunks

    # -- VoiceProvider --------------------------------------------------------------------
    def place_call(self, creds: ProviderCredentials, call: OutboundCall) -> PlacedCall:
        """Ask ``sipd`` to dial ``call.to_e164`` through the trunk of ``call.from_e164``."""
        if not call.stream_url or not call.stream_token:
            raise ProviderError(
                "provider_rejected", "A SIP call needs its bridge stream (URL and token)."
            )
        trunk, secrets = self._outbound_trunk(call.from_e164)
        outbound = trunk.spec.outbound
        assert outbound is not None  # _outbound_trunk checked it
        body = {
            "call_id": str(call.call_id),
            "to": f"sip:{call.to_e164}@{outbound.address}",
            "from_user": call.from_e164,
            "trunk": {
                "address": outbound.address, "transport": outbound.transport,
                "username": secrets.outbound_username, "password": secrets.outbound_password,
            },
            "stream_url": call.stream_url, "token": call.stream_token,
            "codec_preference": CODECS, "timeout_seconds": call.timeout_seconds,
        }  # fmt: skip
        answer = self._post("/calls", body, f"place call {call.call_id}")
        sip_call_id = answer.get("sip_call_id") if isinstance(answer, dict) else None
        if not isinstance(sip_call_id, str) or not sip_call_id:
            raise ProviderError("provider_rejected", "sipd placed the call but named no Call-ID.")
        log.info("SIP call %s placed through trunk %s (Call-ID %s)", call.call_id, trunk.id,
                 sip_call_id)  # fmt: skip
        return PlacedCall(provider_call_id=sip_call_id[:128])

    def transfer(
        self, creds: ProviderCredentials, provider_call_id: str, target: str, mode: TransferMode,
        *, outcome_url: str | None = None,
    ) -> None:  # fmt: skip
        """Transfer the caller to ``target`` (E.164, sent as ``tel:``, or a SIP URI): cold, a
        REFER; warm, sipd's consult leg (returns once the target answered; a target that does
        not: ``ProviderError("transfer_failed")``). ``provider_call_id`` is our call id here
        (see the module's docstring); ``sipd`` reports the outcome to ``/api/sip/transfer``
        (``outcome_url`` names the same route)."""
        call_id = _call_id(provider_call_id)
        if E164.fullmatch(target):
            refer_to = f"tel:{target}"
        elif SIP_URI.fullmatch(target):
            refer_to = target
        else:
            raise ProviderError(
                "provider_rejected", "A transfer target must be an E.164 number "
                "(+15551234567) or a SIP URI (sip:desk@pbx.example.com).",
            )  # fmt: skip
        body: dict[str, Any] = {"target": refer_to, "mode": mode}
        timeout = None
        if mode == "warm":  # sipd answers once the target answered or failed: it rings first
            ring = self.settings.sip_transfer_ring_seconds
            body["timeout_seconds"] = ring
            timeout = ring + self.settings.sip_timeout_seconds
        self._post(f"/calls/{call_id}/transfer", body, f"transfer {call_id}", timeout)
        log.info("SIP call %s transferred (%s) to %s", call_id,
                 "warm, target answered" if mode == "warm" else "cold, REFER",
                 "a SIP URI" if refer_to.startswith("sip") else "a number")  # fmt: skip

    def hang_up(self, creds: ProviderCredentials, provider_call_id: str) -> None:
        call_id = _call_id(provider_call_id)
        self._post(f"/calls/{call_id}/hangup", None, f"hang up {call_id}")

    # -- helpers --------------------------------------------------------------------------
    def _outbound_trunk(self, e164: str) -> tuple[SipTrunk, TrunkSecrets]:
        trunks = self._trunks()
        route = trunks.route(e164)
        if route is None or route.provider != "sip" or route.trunk_id is None:
            raise ProviderError(
                "provider_rejected", f"{e164} is not a SIP number with a trunk: SIP calls go "
                "out through the trunk of the caller-id number.",
            )  # fmt: skip
        trunk = trunks.trunk_of(route.trunk_id)
        secrets = trunks.trunk_secret(route.trunk_id)
        if trunk is None or secrets is None or trunk.space_id != route.space_id:
            raise ProviderError("provider_rejected", f"The SIP trunk of {e164} was deleted.")
        if trunk.spec.outbound is None:
            raise ProviderError(
                "provider_rejected", f"SIP trunk {trunk.id} has no outbound address: set its "
                "`outbound` (PATCH /api/telephony/trunks/{trunk_id}) to call out through it.",
            )  # fmt: skip
        return trunk, secrets

    def _post(
        self, path: str, body: dict[str, Any] | None, what: str, timeout: float | None = None
    ) -> Any:
        secret = self.settings.sip_secret.get_secret_value()
        try:
            answer = httpx.post(
                control_url(self.settings) + path, json=body,
                headers={"Authorization": f"Bearer {secret}"},
                timeout=timeout or self.settings.sip_timeout_seconds, follow_redirects=False,
            )  # fmt: skip
        except httpx.HTTPError as exc:
            raise ProviderError(
                "provider_unreachable", f"sipd did not answer ({what}): {type(exc).__name__}"
            ) from None
        status = answer.status_code
        if status < 300:
            try:
                return answer.json() if answer.content else None
            except ValueError:
                return None
        text = f"sipd refused to {what}: HTTP {status} {answer.text[:200]}"
        if status in (401, 403):
            raise ProviderError("provider_auth_failed", "sipd refused the shared secret "
                                "(telephony.sip_secret differs).", status)  # fmt: skip
        if status == 404:
            raise ProviderError("provider_not_found", f"sipd holds no such call ({what}).", 404)
        if status == 502 and _error_code(answer) == "transfer_failed":  # a warm transfer's target
            message = _error_message(answer) or "the target did not answer"
            raise ProviderError("transfer_failed", f"The warm transfer failed: {message}.", 502)
        code = "provider_unreachable" if status >= 500 else "provider_rejected"
        raise ProviderError(code, text, status)


def _error_body(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_code(answer: httpx.Response) -> str | None:
    code = _error_body(answer).get("code")
    return code if isinstance(code, str) else None


def _error_message(answer: httpx.Response) -> str:
    message = _error_body(answer).get("message")
    return message[:200] if isinstance(message, str) else ""


def _call_id(handle: str) -> UUID:
    try:
        return UUID(handle)
    except ValueError:
        raise ProviderError(
            "provider_rejected", "sipd knows a call by our call id (a UUID)."
        ) from None
