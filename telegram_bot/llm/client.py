"""The only module that calls the OpenAI SDK (its errors become ours in `sdk_errors.py`).

One `AsyncOpenAI` per process, so every call shares one connection pool. The SDK is imported
lazily (it takes most of a second to import), warmed on a thread right after start-up so the
first update is not kept waiting. Retries with `Retry-After` and jittered back-off are the SDK's
own (`OPENAI_MAX_RETRIES`). Streaming asks for usage (`stream_options.include_usage`); a server
that rejects the option is remembered and asked without it, and usage is then estimated with
tiktoken. Every call logs one INFO line: chat, model, tokens in/out/cached, latency, outcome.

A call may carry images for the newest user turn (`vision.py` makes the parts and remembers
the models that refuse them; the default model for such a call is VISION_MODEL).

A reasoning model's thought (inline `<think>…</think>`, or `reasoning_content` / `reasoning`
deltas) is kept apart from the answer (`reasoning.py`): `Completion.text` is the answer only,
`Completion.thought` the thought, reported as it grows through `on_thought`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import tokens
from ..errors import (
    ContextTooLong,
    EmptyCompletion,
    EmptyStream,
    ModelError,
    ModelStreamInterrupted,
    ModelUnavailable,
    ThoughtTooLong,
    VisionRefused,
)
from ..models import Usage
from .chunks import StreamReader, reasoning_of
from .prompt_cache import CacheKeys, cache_fields
from .reasoning import split_thought
from .sdk_errors import translate
from .server_info import ServerInfo, count_prompt, probe
from .usage import usage_of
from .vision import Picture, VisionMemory, attach

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from ..config import Settings

log = logging.getLogger(__name__)

Message = dict[str, str]
OnText = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    usage: Usage
    model: str
    finish_reason: str | None
    usage_estimated: bool = False
    thought: str = ""  # a reasoning model's thought: never part of the answer

    @property
    def at_limit(self) -> bool:
        """The answer stopped at the output limit (`max_tokens`), unfinished."""
        return self.finish_reason == "length"


class LLM:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: AsyncOpenAI | None = None
        self._client_lock = threading.Lock()
        self._no_stream_options: set[str] = set()
        self._cache_keys = CacheKeys()
        self.vision = VisionMemory()
        self.server = ServerInfo()  # what the server says about itself (`probe_server`)

    async def probe_server(self) -> ServerInfo:
        """Asks the server for its context window and tokenizer (bounded, silent on failure)."""
        self.server = await probe(self._settings)
        return self.server

    async def count_on_server(self, messages: Sequence[Message]) -> tuple[int, int] | None:
        """Our count and the server tokenizer's of the same text, where it has a tokenizer."""
        if self.server.tokenizer is None:
            return None
        counted = await count_prompt(self._settings, self.server.tokenizer, messages)
        if counted is None:
            return None
        model = self._settings.openai_model
        if counted.whole:
            return tokens.count_messages(messages, model), counted.tokens
        return tokens.count_text("\n".join(m["content"] for m in messages), model), counted.tokens

    def accepts_images(self, model: str | None = None) -> bool:
        """False once the model refused an image (until a restart)."""
        model = model or self._settings.image_model
        return not self.vision.refuses(self._settings.openai_base_url, model)

    @property
    def client(self) -> AsyncOpenAI:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self) -> AsyncOpenAI:
        from openai import AsyncOpenAI, DefaultAioHttpClient

        s = self._settings
        return AsyncOpenAI(
            # Local servers (Ollama, llama.cpp) ignore the key but the SDK insists on one.
            api_key=s.openai_api_key or "not-needed",
            base_url=s.openai_base_url,
            timeout=s.openai_timeout,
            max_retries=s.openai_max_retries,
            # aiohttp's connection pool costs a fraction of httpx's per request (profiled:
            # docs/benchmarks.md); the session is created lazily, on the event loop.
            http_client=DefaultAioHttpClient(timeout=s.openai_timeout),
        )

    async def _create(self, body: dict[str, Any], retries: int | None = None) -> Any:
        """POSTs /chat/completions through the SDK (its retries, auth, errors and types).

        `chat.completions.create` first walks the request through the SDK's TypedDict
        annotations, which cost a fifth of the bot's CPU per reply under load (profiled, see
        docs/benchmarks.md); our body is plain JSON already, so it goes to the SDK's documented
        low-level `post` as it is, and the answer comes back as plain JSON too (a chunk is a
        dict, as in the API reference), which spares building a pydantic model per chunk.
        """
        body = self._cache_keys.body_for(self._settings.openai_base_url, body)
        try:
            return await self._post(body, retries)
        except Exception as exc:
            if not self._cache_keys.refused(self._settings.openai_base_url, body, exc):
                raise
            return await self._create(body, retries)  # again, without the key

    async def _post(self, body: dict[str, Any], retries: int | None) -> Any:
        from openai import AsyncStream

        stream = bool(body.get("stream"))
        return await self.client.post(
            "/chat/completions",
            cast_to=object,  # the JSON as it came, without building pydantic models
            body=body,
            options={
                "security": {"bearer_auth": True},
                **({"max_retries": retries} if retries is not None else {}),
            },
            stream=stream,
            stream_cls=AsyncStream[object] if stream else None,
        )

    def warm(self) -> None:
        """Imports the SDK and builds the client; meant for a worker thread at start-up."""
        _ = self.client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def chat(
        self,
        messages: Sequence[Message],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        stream: bool = True,
        on_text: OnText | None = None,
        label: str = "-",
        images: Sequence[Picture] = (),
        hint: str = "",
        cache_for: str = "",
        on_thought: OnText | None = None,
    ) -> Completion:
        """Runs one chat completion; `on_text` receives the accumulated answer as it streams,
        `on_thought` a reasoning model's accumulated thought (never part of the answer).

        `images` go on the last message as image parts (with `hint` after its text); a model
        that refuses them raises VisionRefused, now and for every later call with images.
        `cache_for` (a chat's key) sends its `prompt_cache_key` (`prompt_cache.py`)."""
        model = model or (self._settings.image_model if images else self._settings.openai_model)
        started = time.perf_counter()
        outcome = "ok"
        result: Completion | None = None
        try:
            if images and not self.accepts_images(model):
                raise VisionRefused()
            sent = attach(messages, images, hint) if images else list(messages)
            call = _Call(sent, images, cache_fields(self._settings, cache_for))
            if stream and images:
                result = await self._stream_images(call, model, max_tokens, on_text)
            elif stream:
                result = await self._stream_or_ask(call, model, max_tokens, on_text, on_thought)
            else:
                result = await self._complete(call, model, max_tokens)
            if not result.text.strip():
                outcome = "empty"
                raise ThoughtTooLong() if result.thought and result.at_limit else EmptyCompletion()
            if result.at_limit:
                outcome = "length"
            return result
        except ModelError as exc:
            if outcome == "ok":
                outcome = type(exc).__name__
            if isinstance(exc, VisionRefused) and self.accepts_images(model):
                self.vision.remember(self._settings.openai_base_url, model)
                log.error(
                    "The model %r at %s does not take images: set VISION_MODEL to one that does "
                    "(e.g. gpt-4o-mini; Ollama's qwen2.5vl or gemma3; llama.cpp with --mmproj); "
                    "photos are refused until then",
                    model,
                    self._settings.openai_base_url,
                )
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            usage = result.usage if result else Usage()
            log.info(
                "model call chat=%s model=%s prompt_tokens=%d cached_tokens=%d "
                "completion_tokens=%d reasoning_tokens=%d latency_ms=%d outcome=%s",
                label,
                model,
                usage.prompt_tokens,
                usage.cached_tokens,
                usage.completion_tokens,
                usage.reasoning_tokens,
                (time.perf_counter() - started) * 1000,
                outcome,
            )

    async def _stream_images(
        self, call: _Call, model: str, max_tokens: int | None, on_text: OnText | None
    ) -> Completion:
        """Streams a call with images. llama-cpp-python's server, given an image it cannot
        take, answers 200 and its stream dies before the first chunk (measured,
        docs/real-servers.md); asked once more without streaming, it says why (a 500)."""
        try:
            return await self._stream(call, model, max_tokens, on_text)
        except ModelUnavailable:
            # The dead stream leaves its pooled connection broken: the next request on it fails
            # at once (as a timeout), so the probe may retry on a fresh one.
            retries = max(1, self._settings.openai_max_retries)
            result = await self._complete(call, model, max_tokens, retries)
            if on_text is not None and result.text:
                on_text(result.text)
            return result

    async def _stream_or_ask(
        self,
        call: _Call,
        model: str,
        max_tokens: int | None,
        on_text: OnText | None,
        on_thought: OnText | None = None,
    ) -> Completion:
        """Streams a call; a stream that ends with no text and no finish_reason is asked once
        more without streaming, to learn why. llama-cpp-python answers a prompt past its
        window so (an empty 200 stream), and its non-streamed error says the window and the
        prompt's size (ContextTooLong with both); a server that answers that one is answered;
        one that returns nothing again raises EmptyStream (taken as an overflow once)."""
        try:
            return await self._stream(call, model, max_tokens, on_text, on_thought)
        except _NoAnswer:
            log.warning(
                "The model server ended a stream with no answer and no finish_reason; "
                "asking once without streaming"
            )
        retries = max(1, self._settings.openai_max_retries)  # the dead stream's connection
        try:
            result = await self._complete(call, model, max_tokens, retries)
        except ContextTooLong:
            raise
        except ModelError as exc:
            log.warning("The model server failed the same request unstreamed: %r", exc.__cause__)
            raise
        if not result.text.strip():
            raise EmptyStream()
        if on_text is not None:
            on_text(result.text)
        return result

    async def _complete(
        self, call: _Call, model: str, max_tokens: int | None, retries: int | None = None
    ) -> Completion:
        try:
            response = await self._create(
                {"model": model, "messages": call.messages, **_limit(max_tokens), **call.extra},
                retries,
            )
        except Exception as exc:
            raise translate(exc, self._settings, images=bool(call.images)) from exc
        if not isinstance(response, dict):
            log.warning("The model server answered with something that is not JSON")
            raise ModelUnavailable()
        choices = response.get("choices") or [{}]
        message = choices[0].get("message") or {}
        text, thought = split_thought(message.get("content") or "")
        thought = reasoning_of(message) or thought
        finish = choices[0].get("finish_reason")
        usage, estimated = usage_of(
            response.get("usage"), call.messages, call.images, text, model, thought, response
        )
        log.debug("completion model=%s finish=%s", model, finish)
        return Completion(text, usage, model, finish, estimated, thought)

    async def _stream(
        self,
        call: _Call,
        model: str,
        max_tokens: int | None,
        on_text: OnText | None,
        on_thought: OnText | None = None,
    ) -> Completion:
        base = self._settings.openai_base_url
        extra: dict[str, Any] = _limit(max_tokens)
        if base not in self._no_stream_options:
            extra["stream_options"] = {"include_usage": True}
        try:
            stream = await self._create(
                {"model": model, "messages": call.messages, "stream": True, **extra, **call.extra}
            )
        except Exception as exc:
            if "stream_options" in extra and "stream_options" in str(exc):
                log.info("The model server rejects stream_options; usage will be estimated")
                self._no_stream_options.add(base)
                return await self._stream(call, model, max_tokens, on_text, on_thought)
            raise translate(exc, self._settings, images=bool(call.images)) from exc
        reader = StreamReader(on_text, on_thought)
        try:
            async for chunk in stream:
                reader.read(chunk)
        except Exception as exc:
            error = translate(exc, self._settings)
            text = reader.answer()
            raise ModelStreamInterrupted(text) if text else error from exc
        finally:
            await stream.close()
        text = reader.answer()
        if reader.finish is None and reader.usage is None:
            # The connection ended without a finish_reason: the answer is incomplete.
            raise ModelStreamInterrupted(text) if text else _NoAnswer()
        usage, estimated = usage_of(
            reader.usage, call.messages, call.images, text, model, reader.thought, reader.timings
        )
        return Completion(text, usage, model, reader.finish, estimated, reader.thought)


class _NoAnswer(ModelUnavailable):
    """Internal: a stream ended with no text and no finish_reason (none, or a dead one)."""


@dataclass(frozen=True, slots=True)
class _Call:
    """The messages as sent (image parts included) and the images they carry."""

    messages: list[dict[str, Any]]
    images: Sequence[Picture] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # prompt_cache_key


def _limit(max_tokens: int | None) -> dict[str, Any]:
    return {"max_tokens": max_tokens} if max_tokens else {}
