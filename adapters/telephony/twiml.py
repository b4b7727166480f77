"""TwiML for Twilio: connect the call's audio to the bridge as a bidirectional Media Stream
whose parameters carry our call id and stream token, or say why the call cannot be taken."""

from __future__ import annotations

from twilio.twiml.voice_response import Connect, VoiceResponse

STREAM_PATHS = {
    "twilio_media_streams": "/streams/twilio",
    "voximplant": "/streams/voximplant",
    "sip": "/streams/sip",
}


def stream_url(bridge_public_url: str, channel: str) -> str:
    return bridge_public_url.rstrip("/") + STREAM_PATHS[channel]


def connect_stream(url: str, parameters: dict[str, str]) -> str:
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response.to_xml(xml_declaration=True))


def refuse(message: str) -> str:
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return str(response.to_xml(xml_declaration=True))


def dial_number(e164: str, action: str | None = None) -> str:
    """Redirect the call to a phone number (a cold transfer: the stream and agent leave).
    ``action``: where Twilio reports the dialed leg's fate (``DialCallStatus``) once it ends."""
    response = VoiceResponse()
    dial = response.dial(**_reporting(action))
    dial.number(e164)
    return str(response.to_xml(xml_declaration=True))


def dial_sip(uri: str, action: str | None = None) -> str:
    """Redirect the call to a SIP URI (``sip:desk@pbx.example.com``)."""
    response = VoiceResponse()
    dial = response.dial(**_reporting(action))
    dial.sip(uri)
    return str(response.to_xml(xml_declaration=True))


def _reporting(action: str | None) -> dict[str, str]:
    return {} if action is None else {"action": action, "method": "POST"}


def after_transfer(message: str | None) -> str:
    """What the caller hears once the dialed leg ended: nothing more when the transfer went
    through; ``message`` and goodbye when it did not (the agent left at the handover)."""
    response = VoiceResponse()
    if message:
        response.say(message)
    response.hangup()
    return str(response.to_xml(xml_declaration=True))
