"""A fake OpenAI-compatible chat-completions server on 127.0.0.1.

The bot talks to "any OpenAI-compatible model" through the openai SDK; this fake lets tests
script exactly what the model does (text, streaming pace, a stream cut halfway, 429/5xx,
context-length errors, hangs) and read back every request the bot made.

Usage::

    async with FakeOpenAI() as ai:
        client = openai.AsyncOpenAI(base_url=ai.base_url, api_key="sk-test", max_retries=0)
        ai.enqueue("Hello!", Reply("slow one", chunk_chars=2, delay_per_chunk=0.05))
        ai.enqueue(Error(status=429, headers={"retry-after": "1"}))
        ...
        [request] = await ai.wait_for_requests(1)

When the queue is empty `ai.responder(request)` decides (default: "Echo: <last user text>").

Standalone (for benchmarks driving it from another process)::

    python -m tests.fakes.openai --port 0 --latency 1.0 --chunk-chars 8 --chunk-delay 0.01
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import json
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

from . import _tokens
from ._openai_local import Empty, OpenAILocal, empty_stream, llama_server_overflow
from ._openai_media import OpenAIMedia, dead_stream, image_urls
from ._server import (
    FakeServer,
    Journal,
    close_without_answer,
    json_response,
    serve_until_signalled,
    standalone_parser,
)

log = logging.getLogger(__name__)

_ERROR_DEFAULTS: dict[int, tuple[str, str, str | None]] = {
    400: ("Bad request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to sample from this model.", "invalid_request_error", None),
    404: (
        "The model does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    429: (
        "Rate limit reached for requests. Please try again in 1s.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    502: ("Bad gateway.", "server_error", None),
    503: ("The server is overloaded or not ready yet.", "server_error", None),
}


@dataclass
class ChatRequest:
    """One chat-completions request as received (headers lower-cased)."""

    body: dict[str, Any]
    headers: dict[str, str]
    at: float
    prompt_tokens: int = 0
    cached_tokens: int = 0  # of prompt_tokens, shared with the key's previous request
    first_token_at: float | None = None  # when the first content delta was written (monotonic)
    streamed_chars: int = 0  # content characters written so far (Endless, Chunks)
    ended_at: float | None = None  # when an Endless stream ended: the client went away

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []

    @property
    def model(self) -> str | None:
        return self.body.get("model")

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def prompt_cache_key(self) -> str | None:
        key = self.body.get("prompt_cache_key")
        return key if isinstance(key, str) else None

    @property
    def include_usage(self) -> bool:
        options = self.body.get("stream_options")
        return isinstance(options, dict) and bool(options.get("include_usage"))

    @property
    def images(self) -> list[str]:
        """The URLs of the request's image parts (data: URLs from the bot)."""
        return image_urls(self.messages)

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return _tokens.content_text(message.get("content"))
        return ""


@dataclass
class Reply:
    """A scripted assistant reply. None fields fall back to the server-wide settings.

    `cut_after_chars` closes the connection after that many streamed characters (no
    finish_reason, no [DONE]); for a non-streaming request it drops the connection instead of
    answering. `reasoning` is streamed first as `reasoning_content`, like local reasoning
    models served by llama.cpp/vLLM do; with `think_inline` it is in the content instead, as
    `<think>…</think>` before the text (Ollama, llama.cpp without a reasoning parser).

    Like a real model, a reply longer than the request's `max_tokens` (thought included) is
    cut there, with `finish_reason: "length"`.
    """

    text: str = ""
    chunk_chars: int | None = None
    delay_per_chunk: float | None = None
    first_token_delay: float | None = None
    cut_after_chars: int | None = None
    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning: str = ""
    think_inline: bool = False

    def shaped(self) -> Reply:
        """The reply as the server sends it: an inline thought moved into the content."""
        if not (self.think_inline and self.reasoning):
            return self
        content = f"<think>\n{self.reasoning}\n</think>\n\n{self.text}"
        return dataclasses.replace(self, text=content, reasoning="", think_inline=False)


@dataclass
class Error:
    """A scripted error answer in OpenAI's body shape; None fields get per-status defaults.

    `raw_body` replaces the JSON (e.g. a proxy's HTML 502 page); `delay` waits first.
    """

    status: int = 500
    message: str | None = None
    type: str | None = None
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw_body: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # more fields of the error object

    def body(self) -> dict[str, Any]:
        message, kind, code = _ERROR_DEFAULTS.get(self.status, (f"Error {self.status}", "", None))
        return {
            "error": {
                "message": self.message if self.message is not None else message,
                "type": self.type if self.type is not None else kind,
                "param": self.param,
                "code": self.code if self.code is not None else code,
                **self.extra,
            }
        }

    def response(self) -> web.Response:
        if self.raw_body is not None:
            return web.Response(
                status=self.status,
                text=self.raw_body,
                content_type="text/html",
                headers=self.headers,
            )
        return json_response(self.body(), self.status, headers=self.headers)


@dataclass
class Hang:
    """Accept the request, answer nothing for `seconds`, then drop the connection."""

    seconds: float = 3600.0


@dataclass
class Chunks:
    """Stream these `content` values exactly as given, one delta each, then finish normally.

    Any JSON goes: a server whose deltas are not all text (a list of parts, a number, null).
    A non-streaming request gets the values joined as text.
    """

    contents: list[Any]
    delay: float = 0.0


@dataclass
class Endless:
    """Stream `chunk` again and again, `delay` seconds apart, until the client goes away: a
    model that never stops (with a `delay` under the client's read timeout, one that trickles
    a little text every few seconds). A non-streaming request is never answered."""

    chunk: str = "la "
    delay: float = 0.0


Behaviour = str | Reply | Error | Hang | Chunks | Endless | Empty
Responder = Callable[[ChatRequest], Behaviour | Awaitable[Behaviour]]


def echo(request: ChatRequest) -> str:
    """The default responder: proves the bot sent what the user said."""
    return f"Echo: {request.last_user_text}"


def mask_key(key: str) -> str:
    """How OpenAI shows a wrong key in its error message."""
    if len(key) <= 7:
        return "*" * len(key)
    return key[:3] + "*" * (len(key) - 7) + key[-4:]


def context_error(window: int, prompt: int, completion: int | None) -> Error:
    """OpenAI's context_length_exceeded error, in both of its wordings."""
    if completion:
        message = (
            f"This model's maximum context length is {window} tokens. However, you requested "
            f"{prompt + completion} tokens ({prompt} in the messages, {completion} in the "
            "completion). Please reduce the length of the messages or completion."
        )
    else:
        message = (
            f"This model's maximum context length is {window} tokens. However, your messages "
            f"resulted in {prompt} tokens. Please reduce the length of the messages."
        )
    return Error(400, message, "invalid_request_error", "context_length_exceeded", param="messages")


def _parse_body(raw: bytes) -> tuple[dict[str, Any], Error | None]:
    """The request JSON, or OpenAI's complaint about it (the request is recorded either way)."""
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body, None
    return {}, Error(
        400,
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
        "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
        "sent was not valid JSON.)",
        "invalid_request_error",
    )


def split_text(text: str, size: int) -> Iterator[str]:
    size = max(size, 1)
    for start in range(0, len(text), size):
        yield text[start : start + size]


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


@dataclass
class _Completion:
    """Shared identity of one answer: every chunk of a stream repeats id/created/model."""

    id: str
    created: int
    model: str
    include_usage: bool = False

    def envelope(self, kind: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        payload = {**self.envelope("chat.completion.chunk"), "choices": [choice]}
        if self.include_usage:
            payload["usage"] = None  # OpenAI sends null usage on every chunk but the last
        return payload

    def usage_chunk(self, usage: dict[str, Any]) -> dict[str, Any]:
        return {**self.envelope("chat.completion.chunk"), "choices": [], "usage": usage}

    def message(self, reply: Reply, usage: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.text,
            "refusal": None,
            "annotations": [],
        }
        if reply.reasoning:
            message["reasoning_content"] = reply.reasoning
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": reply.finish_reason,
        }
        return {**self.envelope("chat.completion"), "choices": [choice], "usage": usage}


def usage_body(prompt: int, completion: int, reasoning: int = 0, cached: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


LIVE: weakref.WeakSet[FakeOpenAI] = weakref.WeakSet()  # every fake made by this process


class FakeOpenAI(OpenAILocal, OpenAIMedia, FakeServer):
    """The fake chat-completions server. See the module docstring for usage.

    Tunables (plain attributes, change them any time): `api_key`, `latency`, `chunk_chars`,
    `chunk_delay`, `token_factor`, `context_window`, `image_tokens`, `reject_stream_options`,
    `reject_prompt_cache_key`, `models`, `responder`.

    Prompt caching as OpenAI reports it: a request with a `prompt_cache_key` gets
    `usage.prompt_tokens_details.cached_tokens`, the share of its prompt (rendered as a chat
    template lays it out) that equals a prefix of the previous request with the same key.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        latency: float = 0.0,
        chunk_chars: int = 8,
        chunk_delay: float = 0.0,
        token_factor: float = 1.0,
        context_window: int | None = None,
    ) -> None:
        super().__init__(host, port)
        self.api_key = api_key
        self.latency = latency
        self.chunk_chars = chunk_chars
        self.chunk_delay = chunk_delay
        self.token_factor = token_factor
        self.context_window = context_window
        # What each image part adds to the prompt: 576, as llama-server counts a LLaVA 1.5
        # image of any size (docs/real-servers.md, finding 11).
        self.image_tokens = 576
        self.reject_stream_options = False
        self.reject_prompt_cache_key = False  # answer 400, as a strict server does
        self._cache: dict[str, list[int]] = {}  # prompt_cache_key -> its last prompt's tokens
        self.models = ["gpt-4o-mini"]
        self.responder: Responder = echo
        self._queue: deque[Behaviour] = deque()
        self._journal: Journal[ChatRequest] = Journal()
        self._ids = itertools.count(1)
        self._init_media()
        self._init_local()
        LIVE.add(self)

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    async def start(self) -> Self:
        """Also load the tokenizer (once per process, off the loop) before taking requests."""
        await asyncio.to_thread(_tokens.warm)
        return await super().start()

    def make_app(self) -> web.Application:
        from ._openai_control import control_routes  # the control API needs this class

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_post("/v1/audio/transcriptions", self._audio_transcriptions)
        app.router.add_routes(control_routes(self))
        app.router.add_routes(self.local_routes())
        return app

    # ----------------------------------------------------------------- scripting

    def enqueue(self, *behaviours: Behaviour) -> None:
        """Script the next answers, in order: a str (reply text), Reply, Error or Hang."""
        self._queue.extend(behaviours)

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def requests(self) -> list[ChatRequest]:
        return self._journal.items

    async def wait_for_requests(
        self,
        count: int = 1,
        timeout: float = 10.0,  # noqa: ASYNC109 - the familiar name for a test helper
        *,
        since: int = 0,
        predicate: Callable[[ChatRequest], bool] | None = None,
    ) -> list[ChatRequest]:
        """Wait until `count` requests (index >= since, matching predicate) were received."""

        def match(request: ChatRequest) -> bool:
            return predicate is None or predicate(request)

        try:
            return await self._journal.wait_for(match, count, timeout, since)
        except TimeoutError:
            seen = sum(1 for request in self.requests[since:] if match(request))
            raise TimeoutError(
                f"waited {timeout}s for {count} chat request(s), saw {seen} "
                f"({len(self.requests)} recorded in total, {len(self._queue)} still queued)"
            ) from None

    def reset(self) -> None:
        """Forget requests and the scripted queue (settings stay)."""
        self._journal.clear()
        self._queue.clear()
        self._cache.clear()
        self._transcriptions.clear()
        self._transcripts.clear()

    def count_prompt_tokens(self, messages: list[dict[str, Any]], model: str = "") -> int:
        """Prompt tokens as this server reports and enforces them (token_factor applied)."""
        images = len(image_urls(messages)) * self.image_tokens
        return round(_tokens.count_messages(messages, model) * self.token_factor) + images

    def count_completion_tokens(self, text: str, model: str = "") -> int:
        return round(_tokens.count_text(text, model) * self.token_factor)

    # ----------------------------------------------------------------- HTTP handlers

    async def _list_models(self, request: web.Request) -> web.StreamResponse:
        rejection = self._auth_error(request.headers.get("authorization"))
        if rejection is not None:
            return rejection.response()
        created = int(time.time())
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "fake"}
            | self.model_entry(name)
            for name in self.models
        ]
        return json_response({"object": "list", "data": data})

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        body, parse_error = _parse_body(await request.read())
        chat = ChatRequest(body, {k.lower(): v for k, v in request.headers.items()}, arrived)
        self._journal.append(chat)
        if chat.stream and chat.images and not self.vision and self.vision_stream_dies:
            return await dead_stream(request)
        rejection = (
            self._auth_error(chat.headers.get("authorization"))
            or parse_error
            or self._validate(chat)
        )
        if rejection is not None:
            return await self._fail(rejection)
        if self.overflows_silently(chat):
            return await empty_stream(request)
        behaviour = await self._next_behaviour(chat)
        if isinstance(behaviour, Error):
            return await self._fail(behaviour)
        if isinstance(behaviour, Empty):
            if chat.stream:
                return await empty_stream(request)
            behaviour = Reply("")
        if isinstance(behaviour, Hang):
            await self.sleep(behaviour.seconds)
            return close_without_answer(request)
        if isinstance(behaviour, Endless):
            return await self._endless(request, chat, behaviour)
        if isinstance(behaviour, Chunks):
            return await self._chunks(request, chat, behaviour)
        behaviour = self._within_max_tokens(chat, behaviour.shaped())
        if chat.stream:
            return await self._stream(request, chat, behaviour)
        return await self._complete(request, chat, behaviour)

    def _auth_error(self, authorization: str | None) -> Error | None:
        if self.api_key is None:
            return None
        if not authorization:
            return Error(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error",
            )
        key = authorization.removeprefix("Bearer ").strip()
        if key == self.api_key:
            return None
        return Error(
            401,
            f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        )

    def _validate(self, chat: ChatRequest) -> Error | None:
        """Reject before generating, so a queued behaviour is kept for the next request."""
        if self.reject_stream_options and "stream_options" in chat.body:
            return Error(
                400,
                "Unrecognized request argument supplied: stream_options",
                "invalid_request_error",
            )
        if self.reject_prompt_cache_key and "prompt_cache_key" in chat.body:
            return Error(
                400,
                "Unrecognized request argument supplied: prompt_cache_key",
                "invalid_request_error",
            )
        if not chat.model:
            return Error(400, "you must provide a model parameter", "invalid_request_error")
        refused = self._vision_error(chat)
        if refused is not None:
            return refused
        if not chat.messages:
            return Error(
                400,
                "Invalid 'messages': empty array. Expected an array with minimum length 1, "
                "but got an empty array instead.",
                "invalid_request_error",
                "empty_array",
                param="messages",
            )
        chat.prompt_tokens = self.count_prompt_tokens(chat.messages, chat.model or "")
        error = self._context_check(chat)
        if error is None:  # a refused prompt is not cached
            chat.cached_tokens = self._cached(chat)
        return error

    def _cached(self, chat: ChatRequest) -> int:
        """The prompt tokens shared with the key's previous prompt, scaled to prompt_tokens."""
        key = chat.prompt_cache_key
        if key is None:
            return 0
        ids = _tokens.prompt_ids(chat.messages)
        shared = _tokens.common_prefix(self._cache.get(key, []), ids)
        self._cache[key] = ids
        return chat.prompt_tokens * shared // max(1, len(ids))

    def _context_check(self, chat: ChatRequest) -> Error | None:
        if self.context_window is None:
            return None
        completion = chat.body.get("max_completion_tokens") or chat.body.get("max_tokens")
        completion = int(completion) if completion else None
        if self.overflow_style == "empty-stream" and chat.stream:
            return None  # llama-cpp-python: see `overflows_silently`
        if self.overflow_style == "llama-server":
            if chat.prompt_tokens <= self.context_window:
                return None  # it stops at the window with finish_reason "length"
            return llama_server_overflow(self.context_window, chat.prompt_tokens)
        if chat.prompt_tokens + (completion or 0) <= self.context_window:
            return None
        return context_error(self.context_window, chat.prompt_tokens, completion)

    async def _fail(self, error: Error) -> web.Response:
        await self.sleep(error.delay)
        return error.response()

    async def _next_behaviour(
        self, chat: ChatRequest
    ) -> Reply | Error | Hang | Chunks | Endless | Empty:
        if self._queue:
            behaviour: Any = self._queue.popleft()
        else:
            behaviour = self.responder(chat)
            if inspect.isawaitable(behaviour):
                behaviour = await behaviour
        return Reply(behaviour) if isinstance(behaviour, str) else behaviour

    def _identity(self, chat: ChatRequest) -> _Completion:
        return _Completion(
            id=f"chatcmpl-fake{next(self._ids):08d}",
            created=int(time.time()),
            model=chat.model or "",
            include_usage=chat.include_usage and self.stream_usage,
        )

    def _usage(self, chat: ChatRequest, reply: Reply) -> dict[str, Any]:
        prompt = reply.prompt_tokens if reply.prompt_tokens is not None else chat.prompt_tokens
        model = chat.model or ""
        reasoning = self.count_completion_tokens(reply.reasoning, model) if reply.reasoning else 0
        completion = reply.completion_tokens
        if completion is None:
            completion = self.count_completion_tokens(reply.text, model) + reasoning
        return usage_body(prompt, completion, reasoning, min(prompt, chat.cached_tokens))

    def _within_max_tokens(self, chat: ChatRequest, reply: Reply) -> Reply:
        """The reply cut at the request's `max_tokens` (the thought first, then the text),
        finishing with "length", as a real model stops at its output limit."""
        limit = chat.body.get("max_completion_tokens") or chat.body.get("max_tokens")
        if not isinstance(limit, int) or reply.completion_tokens is not None:
            return reply
        budget = int(limit / self.token_factor)
        encoding = _tokens.encoding()
        reasoning = encoding.encode(reply.reasoning, disallowed_special=())
        text = encoding.encode(reply.text, disallowed_special=())
        if len(reasoning) + len(text) <= budget:
            return reply
        kept_reasoning = encoding.decode(reasoning[:budget])
        kept_text = encoding.decode(text[: max(budget - len(reasoning), 0)])
        log.debug("reply cut at max_tokens=%s", limit)
        return dataclasses.replace(
            reply, text=kept_text, reasoning=kept_reasoning, finish_reason="length"
        )

    def _first_delay(self, reply: Reply) -> float:
        return self.latency if reply.first_token_delay is None else reply.first_token_delay

    async def _complete(
        self, request: web.Request, chat: ChatRequest, reply: Reply
    ) -> web.StreamResponse:
        await self.sleep(self._first_delay(reply))
        if reply.cut_after_chars is not None:
            return close_without_answer(request)
        identity = self._identity(chat)
        body = identity.message(reply, self._usage(chat, reply))
        return json_response(body, headers={"x-request-id": identity.id})

    async def _stream(
        self, request: web.Request, chat: ChatRequest, reply: Reply
    ) -> web.StreamResponse:
        await self.sleep(self._first_delay(reply))
        identity = self._identity(chat)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "x-request-id": identity.id,
            }
        )
        await response.prepare(request)
        try:
            first = {"role": "assistant", "content": "", "refusal": None}
            await response.write(sse(identity.chunk(first)))
            chat.first_token_at = time.monotonic()  # the first delta follows without a pause
            if not await self._stream_deltas(response, identity, reply):
                return close_without_answer(request, response)
            await response.write(sse(identity.chunk({}, reply.finish_reason)))
            if identity.include_usage:
                await response.write(sse(identity.usage_chunk(self._usage(chat, reply))))
            await response.write(b"data: [DONE]\n\n")
        except ConnectionError:
            log.debug("client went away mid-stream")
        return response

    async def _open_stream(
        self, request: web.Request, chat: ChatRequest
    ) -> tuple[web.StreamResponse, _Completion]:
        identity = self._identity(chat)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "x-request-id": identity.id,
            }
        )
        await response.prepare(request)
        await response.write(sse(identity.chunk({"role": "assistant", "content": ""})))
        chat.first_token_at = time.monotonic()
        return response, identity

    async def _chunks(
        self, request: web.Request, chat: ChatRequest, chunks: Chunks
    ) -> web.StreamResponse:
        if not chat.stream:
            text = "".join(str(value) for value in chunks.contents)
            return await self._complete(request, chat, Reply(text))
        response, identity = await self._open_stream(request, chat)
        try:
            for index, value in enumerate(chunks.contents):
                if index:
                    await self.sleep(chunks.delay)
                await response.write(sse(identity.chunk({"content": value})))
                chat.streamed_chars += len(value) if isinstance(value, str) else 0
            await response.write(sse(identity.chunk({}, "stop")))
            await response.write(b"data: [DONE]\n\n")
        except ConnectionError:
            log.debug("client went away mid-stream")
        return response

    async def _endless(
        self, request: web.Request, chat: ChatRequest, endless: Endless
    ) -> web.StreamResponse:
        if not chat.stream:
            await self.sleep(3600.0)
            return close_without_answer(request)
        response, identity = await self._open_stream(request, chat)
        payload = sse(identity.chunk({"content": endless.chunk}))
        try:
            while not self.closing.is_set():
                await response.write(payload)
                chat.streamed_chars += len(endless.chunk)
                await (self.sleep(endless.delay) if endless.delay else asyncio.sleep(0))
        except ConnectionError:
            log.debug("client went away from an endless stream")
        finally:
            chat.ended_at = time.monotonic()
        return response

    async def _stream_deltas(
        self, response: web.StreamResponse, identity: _Completion, reply: Reply
    ) -> bool:
        """Write the reasoning/content deltas; False if the reply is scripted to be cut."""
        size = reply.chunk_chars or self.chunk_chars
        delay = self.chunk_delay if reply.delay_per_chunk is None else reply.delay_per_chunk
        budget = reply.cut_after_chars
        pieces = [("reasoning_content", p) for p in split_text(reply.reasoning, size)]
        pieces += [("content", p) for p in split_text(reply.text, size)]
        sent = 0
        for index, (key, piece) in enumerate(pieces):
            if budget is not None:
                piece = piece[: budget - sent]
                if not piece:
                    break
            if index:
                await self.sleep(delay)
            await response.write(sse(identity.chunk({key: piece})))
            sent += len(piece)
        return budget is None


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m tests.fakes.openai`."""
    parser = standalone_parser("Fake OpenAI chat-completions server (prints READY <base_url>).")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--chunk-chars", type=int, default=8)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--token-factor", type=float, default=1.0)
    parser.add_argument("--context-window", type=int, default=None)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    fake = FakeOpenAI(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        latency=args.latency,
        chunk_chars=args.chunk_chars,
        chunk_delay=args.chunk_delay,
        token_factor=args.token_factor,
        context_window=args.context_window,
    )
    asyncio.run(serve_until_signalled(fake))


if __name__ == "__main__":
    main()
