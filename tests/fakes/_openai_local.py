"""Local model servers in the fake OpenAI server: where each says its window, its tokenizer,
how it overflows, and streams without usage.

`server_kind` makes the fake answer as one real server does besides chat completions
(measured against the real llama.cpp servers, docs/real-servers.md; read from the others'
source and docs): "llama-server" (`GET /props`, `/v1/models` `meta.n_ctx`, `POST /tokenize`,
`POST /apply-template`), "llama-cpp-python" (`POST /extras/tokenize`, `/extras/tokenize/count`,
no window anywhere), "ollama" (`POST /api/show`, `GET /api/ps`), "vllm" (`/v1/models`
`max_model_len`), "lmstudio" (`GET /api/v0/models`); None (default): OpenAI, none of these.
The window they report is `context_window` (Ollama's `num_ctx` only when `ollama_num_ctx`).

`overflow_style` is how a prompt past `context_window` fails: "openai" (a 400
context_length_exceeded, the default), "llama-server" (its 400 `exceed_context_size_error`,
with `n_ctx` and `n_prompt_tokens`) or "empty-stream" (llama-cpp-python: a streamed request
whose prompt alone passes the window gets a 200 event stream with no event at all; unstreamed,
OpenAI's 400). `stream_usage = False` leaves usage out of every stream, even when asked
(llama-cpp-python). The tokenizer endpoints count like `count_prompt_tokens` (tiktoken times
`token_factor`). `probes` records every request to these routes (method, path, headers);
`probe_delay` makes them slow, `probe_redirect` answers each with a redirect to that URL.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import _tokens
from ._server import json_response

if TYPE_CHECKING:
    from .openai import ChatRequest, Error

LLAMA_SERVER = "llama-server"
LLAMA_CPP_PYTHON = "llama-cpp-python"
OLLAMA = "ollama"
VLLM = "vllm"
LM_STUDIO = "lmstudio"
BOS = 1


@dataclass
class Empty:
    """A scripted answer with nothing in it: streamed, a 200 event stream with no event (as
    llama-cpp-python answers an overflow or a template error); unstreamed, a 200 whose
    message content is empty."""


@dataclass(frozen=True)
class Probe:
    method: str
    path: str
    headers: dict[str, str]


def llama_server_overflow(window: int, prompt: int) -> Error:
    """llama-server's 400 for a prompt past its window (streamed or not)."""
    from .openai import Error

    return Error(
        400,
        f"request ({prompt} tokens) exceeds the available context size ({window} tokens), "
        "try increasing it",
        "exceed_context_size_error",
        extra={"code": 400, "n_prompt_tokens": prompt, "n_ctx": window},
    )


async def empty_stream(request: web.Request) -> web.StreamResponse:
    """A 200 event stream that ends at once with no event, then the connection closes."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    return response


class OpenAILocal:
    """Mixed into FakeOpenAI."""

    context_window: int | None
    token_factor: float
    models: list[str]

    if TYPE_CHECKING:  # FakeServer's and FakeOpenAI's, which this is mixed into

        async def sleep(self, seconds: float) -> None: ...

        def count_prompt_tokens(self, messages: list[dict[str, Any]], model: str = "") -> int: ...

    def _init_local(self) -> None:
        self.server_kind: str | None = None
        self.overflow_style = "openai"
        self.stream_usage = True
        self.ollama_num_ctx: int | None = None  # `num_ctx` in the model's parameters
        self.ollama_loaded: int | None = None  # `context_length` of the loaded model (/api/ps)
        self.trained_context = 32_768  # the model's own length (Ollama, LM Studio, meta)
        self.probes: list[Probe] = []
        self.probe_delay = 0.0
        self.probe_redirect: str | None = None
        self._rendered: dict[str, list[dict[str, Any]]] = {}

    def local_routes(self) -> list[web.RouteDef]:
        return [
            web.get("/props", self._props),
            web.post("/tokenize", self._tokenize),
            web.post("/apply-template", self._apply_template),
            web.post("/extras/tokenize", self._extras_tokenize),
            web.post("/extras/tokenize/count", self._extras_count),
            web.post("/api/show", self._ollama_show),
            web.get("/api/ps", self._ollama_ps),
            web.get("/api/v0/models", self._lm_studio_models),
        ]

    def overflows_silently(self, chat: ChatRequest) -> bool:
        """llama-cpp-python's empty 200 stream: streamed, and the prompt alone passes."""
        return (
            self.overflow_style == "empty-stream"
            and chat.stream
            and self.context_window is not None
            and chat.prompt_tokens >= self.context_window
        )

    def model_entry(self, name: str) -> dict[str, Any]:
        """What `/v1/models` adds to a model's entry, as this kind of server."""
        if self.server_kind == LLAMA_SERVER and self.context_window:
            meta = {"n_ctx": self.context_window, "n_ctx_train": self.trained_context}
            return {"owned_by": "llamacpp", "meta": {"vocab_type": 2, **meta}}
        if self.server_kind == VLLM and self.context_window:
            return {"owned_by": "vllm", "max_model_len": self.context_window}
        return {}

    # ----------------------------------------------------------------- routes

    async def _seen(self, request: web.Request, kinds: tuple[str, ...]) -> bool:
        self.probes.append(Probe(request.method, request.path, dict(request.headers)))
        await self.sleep(self.probe_delay)
        if self.probe_redirect is not None:
            raise web.HTTPTemporaryRedirect(f"{self.probe_redirect}{request.path}")
        return self.server_kind in kinds

    def _count(self, text: str) -> int:
        return round(_tokens.count_text(text) * self.token_factor)

    async def _props(self, request: web.Request) -> web.Response:
        if not await self._seen(request, (LLAMA_SERVER,)) or not self.context_window:
            return _not_found()
        settings = {"n_ctx": self.context_window, "params": {"n_predict": -1}}
        return json_response({"default_generation_settings": settings, "total_slots": 1})

    async def _tokenize(self, request: web.Request) -> web.Response:
        if not await self._seen(request, (LLAMA_SERVER,)):
            return _not_found()
        body = await request.json()
        content = str(body.get("content", ""))
        if content in self._rendered:  # a rendered template: exactly the usage's count
            count = self.count_prompt_tokens(self._rendered[content])
        else:
            count = self._count(content) + (1 if body.get("add_special") else 0)
        return json_response({"tokens": list(range(2, count + 2))})

    async def _apply_template(self, request: web.Request) -> web.Response:
        if not await self._seen(request, (LLAMA_SERVER,)):
            return _not_found()
        messages = list((await request.json()).get("messages") or [])
        prompt = "".join(
            f"<|im_start|>{m.get('role')}\n{_tokens.content_text(m.get('content'))}<|im_end|>\n"
            for m in messages
        )
        prompt += "<|im_start|>assistant\n"
        self._rendered[prompt] = messages
        return json_response({"prompt": prompt})

    async def _extras_tokenize(self, request: web.Request) -> web.Response:
        if not await self._seen(request, (LLAMA_CPP_PYTHON,)):
            return _not_found()
        count = self._count(str((await request.json()).get("input", "")))
        return json_response({"tokens": [BOS, *range(2, count + 2)]})

    async def _extras_count(self, request: web.Request) -> web.Response:
        if not await self._seen(request, (LLAMA_CPP_PYTHON,)):
            return _not_found()
        count = self._count(str((await request.json()).get("input", "")))
        return json_response({"count": count + 1})

    async def _ollama_show(self, request: web.Request) -> web.Response:
        if not await self._seen(request, (OLLAMA,)):
            return _not_found()
        parameters = 'stop "<|im_end|>"'
        if self.ollama_num_ctx:
            parameters = f"num_ctx {self.ollama_num_ctx}\n{parameters}"
        info = {"general.architecture": "qwen2", "qwen2.context_length": self.trained_context}
        return json_response({"parameters": parameters, "model_info": info, "template": ""})

    async def _ollama_ps(self, request: web.Request) -> web.Response:
        if not await self._seen(request, (OLLAMA,)):
            return _not_found()
        loaded = [
            {"name": f"{name}:latest", "model": f"{name}:latest", "context_length": length}
            for name in self.models
            if (length := self.ollama_loaded)
        ]
        return json_response({"models": loaded})

    async def _lm_studio_models(self, request: web.Request) -> web.Response:
        if not await self._seen(request, (LM_STUDIO,)):
            return _not_found()
        data = [
            {
                "id": name,
                "object": "model",
                "type": "llm",
                "state": "loaded",
                "max_context_length": self.trained_context,
                "loaded_context_length": self.context_window,
                "created": int(time.time()),
            }
            for name in self.models
        ]
        return json_response({"object": "list", "data": data})


def _not_found() -> web.Response:
    return json_response({"detail": "Not Found"}, 404)
