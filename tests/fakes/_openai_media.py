"""Media in the fake OpenAI server: `POST /v1/audio/transcriptions`, and models without vision.

Transcriptions are a multipart upload (`file`, `model`, `response_format`...), answered with
`{"text": ...}` from a script (`enqueue_transcription`) or `transcriber` (default: a fixed
sentence). `transcriptions_supported = False` makes the endpoint answer 404 with a plain-text
body, as Ollama does (it has no such route). `vision = False` makes every chat request that
carries an image part fail with OpenAI's 400 for a model without vision, before anything is
generated (`vision_error` makes it look like a llama.cpp server's refusal instead). Every
request is recorded, so a test can check what reached the model side.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.web_request import FileField

from ._server import Journal, json_response

if TYPE_CHECKING:
    from .openai import ChatRequest, Error

NO_VISION = "Invalid content type. image_url is only supported by certain models."
# What real servers answer a model without vision (measured against the real servers,
# docs/real-servers.md): llama.cpp's llama-server started without --mmproj, and
# llama-cpp-python's server without a clip model (its chat template meets a list of parts).
LLAMA_SERVER_NO_MMPROJ = (
    "image input is not supported - hint: if this is unexpected, you may need to provide the mmproj"
)
LLAMA_CPP_PYTHON_NO_CLIP = 'can only concatenate str (not "list") to str'
# whisper.cpp's whisper-server (measured, tests/real/test_whisper_voice.py): every answer has
# `Server: whisper.cpp`; an upload it cannot decode (OGG/Opus without --convert) gets 400 with
# this text/plain body (its error handler replaces the JSON error), and a path it does not
# serve (started without --inference-path) gets 404 "File Not Found (<path>)".
WHISPER_CPP_HEADERS = {"Server": "whisper.cpp"}
WHISPER_CPP_UNREADABLE = "Invalid request"


@dataclass
class TranscriptionRequest:
    """One `/audio/transcriptions` upload as received (headers lower-cased)."""

    fields: dict[str, str]
    filename: str
    content_type: str
    data: bytes
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)

    @property
    def model(self) -> str | None:
        return self.fields.get("model")


class OpenAIMedia:
    """Mixed into FakeOpenAI."""

    def _init_media(self) -> None:
        self.transcriptions_supported = True
        self.vision = True
        self.vision_error: Error | None = None  # how a refusal looks (default: OpenAI's 400)
        # llama-cpp-python: a streamed request with an image it cannot take gets a 200 whose
        # stream dies before its first chunk (the error shows only without streaming).
        self.vision_stream_dies = False
        self.transcriber: Callable[[TranscriptionRequest], str] = lambda r: (
            "Hello from a voice note"
        )
        self._transcripts: deque[Any] = deque()
        self._transcriptions: Journal[TranscriptionRequest] = Journal()

    @property
    def transcriptions(self) -> list[TranscriptionRequest]:
        return self._transcriptions.items

    def enqueue_transcription(self, *behaviours: Any) -> None:
        """The next transcripts, in order: a str (the text heard) or an Error."""
        self._transcripts.extend(behaviours)

    async def wait_for_transcriptions(
        self,
        count: int = 1,
        timeout: float = 10.0,  # noqa: ASYNC109 - the familiar name for a test helper
    ) -> list[TranscriptionRequest]:
        return await self._transcriptions.wait_for(lambda _r: True, count, timeout)

    async def _audio_transcriptions(self, request: web.Request) -> web.StreamResponse:
        from .openai import Error

        form = await request.post()
        fields: dict[str, str] = {}
        upload: tuple[str, str, bytes] = ("", "", b"")
        for name, value in form.items():
            if isinstance(value, FileField):
                with value.file:
                    upload = (value.filename, value.content_type, value.file.read())
            else:
                fields[name] = str(value)
        headers = {k.lower(): v for k, v in request.headers.items()}
        transcription = TranscriptionRequest(fields, *upload, headers=headers)
        self._transcriptions.append(transcription)
        if not self.transcriptions_supported:
            return web.Response(status=404, text="404 page not found", content_type="text/plain")
        rejection = self._auth_error(headers.get("authorization"))  # type: ignore[attr-defined]
        if rejection is not None:
            return rejection.response()
        if not upload[2] or not transcription.model:
            return Error(400, "Missing file or model.", "invalid_request_error").response()
        behaviour = self._transcripts.popleft() if self._transcripts else None
        if behaviour is None:
            behaviour = self.transcriber(transcription)
        if isinstance(behaviour, Error):
            return behaviour.response()
        return json_response({"text": behaviour})

    def _vision_error(self, chat: ChatRequest) -> Error | None:
        from .openai import Error

        if self.vision or not chat.images:
            return None
        if self.vision_error is not None:
            return self.vision_error
        return Error(400, NO_VISION, "invalid_request_error", param="messages")


async def dead_stream(request: web.Request) -> web.StreamResponse:
    """A 200 event stream closed before its first event."""
    from ._server import close_without_answer

    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await response.prepare(request)
    return close_without_answer(request, response)


def llama_server_refusal() -> Error:
    """llama-server without --mmproj: a 500, not a 400."""
    from .openai import Error

    return Error(500, LLAMA_SERVER_NO_MMPROJ, "server_error")


def llama_cpp_python_refusal() -> Error:
    from .openai import Error

    return Error(500, LLAMA_CPP_PYTHON_NO_CLIP, "internal_server_error")


def image_urls(messages: list[dict[str, Any]]) -> list[str]:
    """The URLs of every image part in a chat request, in order."""
    found = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                url = (part.get("image_url") or {}).get("url")
                if isinstance(url, str):
                    found.append(url)
    return found
