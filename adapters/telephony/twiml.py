"""TwiML for Twilio: connect the call's audio to the bridge as a bidirectional Media Stream
whose parameters carry our call id and stream token, or say why the call cannot be taken."""

from __future__ import annotations

from twilio.twiml.voice_response import Connect, VoiceResponse

STREAM_PATHS = {"twilio_media_streams": "/streams/twilio", "voximplant": "/streams/voximplant"}


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


def dial_number(e164: str) -> str:
    """Redirect the call to a phone number (a cold transfer: the stream and agent leave)."""
    response = VoiceResponse()
    dial = response.dial()
    dial.number(e164)
    return str(response.to_xml(xml_declaration=True))


def dial_sip(uri: str) -> str:
    """Redirect the call to a SIP URI (``sip:desk@pbx.example.com``)."""
    response = VoiceResponse()
    dial = response.dial()
    dial.sip(uri)
    return str(response.to_xml(xml_declaration=True))
