"""The only module that talks to the OpenAI SDK; it maps the SDK's errors to ours.

One `AsyncOpenAI` per process, so every call shares one connection pool. The SDK is imported
lazily (it takes most of a second to import), warmed on a thread right after start-up so the
first update is not kept waiting. Retries with `Retry-After` and jittered back-off are the SDK's
own (`OPENAI_MAX_RETRIES`). Streaming asks for usage (`stream_options.include_usage`); a server
that rejects the option is remembered and asked without it, and usage is then estimated with
tiktoken. Every call logs one INFO line: chat, model, tokens in/out, latency, outcome.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import tokens
from ..errors import (
    ContextTooLong,
    EmptyCompletion,
    ModelAuthError,
    ModelError,
    ModelNotFound,
    ModelRateLimited,
    ModelStreamInterrupted,
    ModelTimeout,
    ModelUnavailable,
)
from ..models import Usage

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from ..config import Settings

log = logging.getLogger(__name__)

Message = dict[str, str]
OnText = Callable[[str], None]

_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "maximum context length",
    "context length",
    "too many tokens",
)


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    usage: Usage
    model: str
    finish_reason: str | None
    usage_estimated: bool = False


class LLM:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: AsyncOpenAI | None = None
        self._client_lock = threading.Lock()
        self._no_stream_options: set[str] = set()

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

    async def _create(self, body: dict[str, Any]) -> Any:
        """POSTs /chat/completions through the SDK (its retries, auth, errors and types).

        `chat.completions.create` first walks the request through the SDK's TypedDict
        annotations, which cost a fifth of the bot's CPU per reply under load (profiled, see
        docs/benchmarks.md); our body is plain JSON already, so it goes to the SDK's documented
        low-level `post` as it is, and the answer comes back as plain JSON too (a chunk is a
        dict, as in the API reference), which spares building a pydantic model per chunk.
        """
        from openai import AsyncStream

        stream = bool(body.get("stream"))
        return await self.client.post(
            "/chat/completions",
            cast_to=object,  # the JSON as it came, without building pydantic models
            body=body,
            options={"security": {"bearer_auth": True}},
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
    ) -> Completion:
        """Runs one chat completion; `on_text` receives the accumulated text as it streams."""
        model = model or self._settings.openai_model
        started = time.perf_counter()
        outcome = "ok"
        result: Completion | None = None
        try:
            if stream:
                result = await self._stream(messages, model, max_tokens, on_text)
            else:
                result = await self._complete(messages, model, max_tokens)
            if not result.text.strip():
                outcome = "empty"
                raise EmptyCompletion()
            return result
        except ModelError as exc:
            if outcome == "ok":
                outcome = type(exc).__name__
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            usage = result.usage if result else Usage()
            log.info(
                "model call chat=%s model=%s prompt_tokens=%d completion_tokens=%d "
                "latency_ms=%d outcome=%s",
                label,
                model,
                usage.prompt_tokens,
                usage.completion_tokens,
                (time.perf_counter() - started) * 1000,
                outcome,
            )

    async def _complete(
        self, messages: Sequence[Message], model: str, max_tokens: int | None
    ) -> Completion:
        try:
            response = await self._create(
                {"model": model, "messages": list(messages), **_limit(max_tokens)}
            )
        except Exception as exc:
            raise translate(exc, self._settings) from exc
        if not isinstance(response, dict):
            log.warning("The model server answered with something that is not JSON")
            raise ModelUnavailable()
        choices = response.get("choices") or [{}]
        text = (choices[0].get("message") or {}).get("content") or ""
        finish = choices[0].get("finish_reason")
        usage, estimated = _usage(response.get("usage"), messages, text, model)
        log.debug("completion model=%s finish=%s", model, finish)
        return Completion(text, usage, model, finish, estimated)

    async def _stream(
        self,
        messages: Sequence[Message],
        model: str,
        max_tokens: int | None,
        on_text: OnText | None,
    ) -> Completion:
        base = self._settings.openai_base_url
        extra: dict[str, Any] = _limit(max_tokens)
        if base not in self._no_stream_options:
            extra["stream_options"] = {"include_usage": True}
        try:
            stream = await self._create(
                {"model": model, "messages": list(messages), "stream": True, **extra}
            )
        except Exception as exc:
            if "stream_options" in extra and "stream_options" in str(exc):
                log.info("The model server rejects stream_options; usage will be estimated")
                self._no_stream_options.add(base)
                return await self._stream(messages, model, max_tokens, on_text)
            raise translate(exc, self._settings) from exc
        parts: list[str] = []
        finish: str | None = None
        raw_usage: Any = None
        try:
            async for chunk in stream:
                if chunk.get("usage") is not None:
                    raw_usage = chunk["usage"]
                if not chunk.get("choices"):
                    continue
                choice = chunk["choices"][0]
                content = (choice.get("delta") or {}).get("content")
                if content is not None and not isinstance(content, str):
                    # Joining it would raise TypeError and lose the text so far.
                    log.warning(
                        "The model server sent a delta whose content is not text: %.80r", content
                    )
                    raise ModelError()  # below: the text so far is kept, as for a broken stream
                if content:
                    parts.append(content)
                    if on_text is not None:
                        on_text("".join(parts))
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
        except Exception as exc:
            error = translate(exc, self._settings)
            raise ModelStreamInterrupted("".join(parts)) if parts else error from exc
        finally:
            await stream.close()
        text = "".join(parts)
        if finish is None and raw_usage is None:
            # The connection ended without a finish_reason: the answer is incomplete.
            raise ModelStreamInterrupted(text) if text else ModelUnavailable()
        usage, estimated = _usage(raw_usage, messages, text, model)
        return Completion(text, usage, model, finish, estimated)


def _limit(max_tokens: int | None) -> dict[str, Any]:
    return {"max_tokens": max_tokens} if max_tokens else {}


def _usage(raw: Any, messages: Sequence[Message], text: str, model: str) -> tuple[Usage, bool]:
    if isinstance(raw, dict) and raw.get("prompt_tokens") is not None:
        return Usage(int(raw["prompt_tokens"]), int(raw.get("completion_tokens") or 0)), False
    return Usage(tokens.count_messages(messages, model), tokens.count_text(text, model)), True


def translate(exc: BaseException, settings: Settings) -> ModelError:
    """Turns an SDK or transport exception into one of ours, logging what the owner must fix."""
    import openai

    if isinstance(exc, ModelError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return ModelTimeout()
    if isinstance(exc, openai.APIConnectionError):
        return ModelUnavailable()
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        log.error(
            "The model server refused the credentials (HTTP %s): check OPENAI_API_KEY "
            "and OPENAI_BASE_URL (%s)",
            exc.status_code,
            settings.openai_base_url,
        )
        return ModelAuthError()
    if isinstance(exc, openai.RateLimitError):
        return ModelRateLimited()
    if isinstance(exc, openai.NotFoundError):
        log.error(
            "The model server has no model %r at %s: check OPENAI_MODEL",
            settings.openai_model,
            settings.openai_base_url,
        )
        return ModelNotFound()
    if isinstance(exc, openai.APIStatusError):
        message = str(exc).lower()
        if exc.status_code in (400, 413) and any(m in message for m in _CONTEXT_MARKERS):
            return ContextTooLong()
        if exc.status_code >= 500:
            return ModelUnavailable()
        log.error("The model server rejected the request (HTTP %s): %s", exc.status_code, exc)
        return ModelError()
    if isinstance(exc, openai.APIError):
        return ModelUnavailable()
    return ModelError()
