"""Speech to text through an OpenAI-compatible `POST /audio/transcriptions` (multipart upload).

OpenAI's Whisper, speaches (faster-whisper-server), whisper.cpp's server and vLLM all speak it.
The endpoint is TRANSCRIPTION_BASE_URL (default: the chat endpoint's OPENAI_BASE_URL) with
TRANSCRIPTION_API_KEY (default: OPENAI_API_KEY); its own `AsyncOpenAI` is made on the first
recording, so a bot nobody sends voice to never builds it. A server with no such endpoint
(Ollama answers 404) or that refuses the key is a setting to fix: the user gets one line, the
log says what to set. Every call logs one INFO line, like a chat call.

What a server answers is cleaned into the words heard. Silence is not always an empty text:
whisper.cpp's server with its English models answers `[BLANK_AUDIO]` (one per silent segment,
also after real words), and Whisper models caption a pause `[ Silence ]` or `(silence)`; those
markers are removed, so a silent recording gives "" (the caller's one line, no model call).
whisper.cpp also writes one line per segment, cut at 60 characters even mid-sentence: lines
that begin a new word are joined again. Its errors do not say what is wrong (a 400 "Invalid
request" for audio it cannot read, a plain 404 off its one path), but it names itself
(`Server: whisper.cpp`), so the log names the flag to set.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import MediaError, TranscriptionFailed, TranscriptionUnavailable

if TYPE_CHECKING:
    from openai import APIStatusError, AsyncOpenAI

    from ..config import Settings

log = logging.getLogger(__name__)

# A line break before a word: whisper.cpp's segment boundary.
_SEGMENT_BREAK = re.compile(r"\n(?=[ \t])")
# What Whisper servers write for a stretch with no speech (removed wherever they are, any case).
_SILENCE_MARKERS = re.compile(r"\[\s*blank[_ ]audio\s*\]|[\[(]\s*silence\s*[\])]", re.IGNORECASE)


def _is_whisper_cpp(exc: APIStatusError) -> bool:
    """Whether the answer came from whisper.cpp's server (it names itself in `Server`)."""
    return exc.response.headers.get("server", "").lower() == "whisper.cpp"


def words_heard(text: str) -> str:
    """The transcript without silence markers and surrounding whitespace ("" for silence), its
    segments joined again where a server broke lines between words (whisper.cpp writes each
    segment, at most 60 characters, as " text\\n")."""
    return _SEGMENT_BREAK.sub("", _SILENCE_MARKERS.sub("", text)).strip()


class Transcriber:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: AsyncOpenAI | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> AsyncOpenAI:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    from openai import AsyncOpenAI, DefaultAioHttpClient

                    s = self._settings
                    self._client = AsyncOpenAI(
                        api_key=s.transcriber_api_key or "not-needed",
                        base_url=s.transcriber_base_url,
                        timeout=s.openai_timeout,
                        max_retries=s.openai_max_retries,
                        http_client=DefaultAioHttpClient(timeout=s.openai_timeout),
                    )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def transcribe(
        self, data: bytes, filename: str, mime: str, *, seconds: int, label: str = "-"
    ) -> str:
        """The words heard in the recording (may be empty: silence); raises MediaError."""
        model = self._settings.transcription_model
        started = time.perf_counter()
        outcome = "ok"
        try:
            result: Any = await self.client.audio.transcriptions.create(
                model=model, file=(filename, data, mime), response_format="json"
            )
            text = getattr(result, "text", result)
            return words_heard(text) if isinstance(text, str) else ""
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as exc:
            error = self._translate(exc)
            outcome = type(error).__name__
            raise error from exc
        finally:
            log.info(
                "transcription call chat=%s model=%s audio_seconds=%d bytes=%d latency_ms=%d "
                "outcome=%s",
                label,
                model,
                seconds,
                len(data),
                (time.perf_counter() - started) * 1000,
                outcome,
            )

    def _translate(self, exc: BaseException) -> MediaError:
        import openai

        url = f"{self._settings.transcriber_base_url}/audio/transcriptions"
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            log.error(
                "The speech-to-text server refused the credentials (HTTP %s) at %s: check "
                "TRANSCRIPTION_API_KEY (default: OPENAI_API_KEY)",
                exc.status_code,
                url,
            )
            return TranscriptionUnavailable()
        if isinstance(exc, openai.APIStatusError) and exc.status_code in (404, 405):
            if "model" in str(exc).lower() and exc.status_code == 404:
                log.error(
                    "The speech-to-text server at %s has no model %r: check TRANSCRIPTION_MODEL",
                    url,
                    self._settings.transcription_model,
                )
            elif _is_whisper_cpp(exc):
                log.error(
                    "whisper.cpp's server at %s serves speech to text on its --inference-path "
                    "only (default /inference; HTTP %s here): start it with --inference-path "
                    "%s, or point TRANSCRIPTION_BASE_URL elsewhere",
                    url,
                    exc.status_code,
                    urlsplit(url).path,
                )
            else:
                log.error(
                    "There is no speech-to-text endpoint at %s (HTTP %s; Ollama has none): set "
                    "TRANSCRIPTION_BASE_URL to a Whisper server (speaches, whisper.cpp's "
                    "server, vLLM, OpenAI), with TRANSCRIPTION_MODEL and TRANSCRIPTION_API_KEY; "
                    "see README, 'Voice, photos and files'",
                    url,
                    exc.status_code,
                )
            return TranscriptionUnavailable()
        if (
            isinstance(exc, openai.APIStatusError)
            and exc.status_code == 400
            and _is_whisper_cpp(exc)
        ):
            log.warning(
                "whisper.cpp's server could not read the recording (HTTP 400: %s): Telegram "
                "sends OGG/Opus, which it reads only when started with --convert (and ffmpeg "
                "installed)",
                exc.response.text[:200],
            )
        elif isinstance(exc, openai.APIStatusError):
            log.warning("The speech-to-text server failed (HTTP %s): %s", exc.status_code, exc)
        else:
            log.warning("The speech-to-text server is unreachable: %s", type(exc).__name__)
        return TranscriptionFailed()
