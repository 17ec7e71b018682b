"""What the model server says about itself: its context window and its tokenizer.

Asked once at start-up, all at once and bounded (`PROBE_TIMEOUT` in total), on the origin of
OPENAI_BASE_URL only: the API key goes to no other host, and redirects are not followed. Each
kind of local server says its window in its own place (measured or read from their source;
docs/real-servers.md):

* llama.cpp `llama-server`: `GET /props` → `default_generation_settings.n_ctx` (what one
  request may use: the per-slot window), also `GET /v1/models` → `data[].meta.n_ctx`;
* vLLM: `GET /v1/models` → `data[].max_model_len`;
* Ollama: `POST /api/show` → the `num_ctx` the model runs with (its `parameters`), else the
  window of the loaded model (`GET /api/ps` → `context_length`), else Ollama's default (4096)
  capped by the model's own `<arch>.context_length`. Ollama silently drops the *front* of a
  longer prompt (the persona and the summary), so its real window matters most;
* LM Studio: `GET /api/v0/models` → `loaded_context_length` (else `max_context_length`).

llama-cpp-python's server says its window nowhere (only in the error of a non-streamed
request that overflows, which `sdk_errors.translate` reads), but it has a tokenizer
(`POST /extras/tokenize/count`), as llama-server has (`/apply-template` + `/tokenize`): where
streams carry no usage, the engine calibrates its token count on them (`count_prompt`).
Every failure is silent: the answer is then "unknown", and the family table decides.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 3.0  # seconds, for every probe together
COUNT_TIMEOUT = 5.0  # seconds, for one tokenizer count
OLLAMA_DEFAULT_NUM_CTX = 4096  # what Ollama runs a model with unless told (OLLAMA_CONTEXT_LENGTH)
# Hosted APIs whose windows the family table knows; asking them for /props is pointless.
_HOSTED = ("api.openai.com",)

LLAMA_SERVER = "llama-server"
LLAMA_CPP_PYTHON = "llama-cpp-python"


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the probes found; None where the server did not say."""

    window: int | None = None
    source: str = ""  # where the window was read, for the start-up line
    tokenizer: str | None = None  # LLAMA_SERVER or LLAMA_CPP_PYTHON: whose tokenizer endpoint


def origin(base_url: str) -> str:
    """`http://host:port/v1` → `http://host:port` (where llama.cpp and Ollama serve the rest)."""
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/")
    path = path.removesuffix("/v1")
    return f"{parts.scheme}://{parts.netloc}{path}"


class _Prober:
    """One aiohttp session on one origin, with the key where the settings have one."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self.session = session
        self.origin = origin(settings.openai_base_url)
        self.base = settings.openai_base_url.rstrip("/")
        self.model = settings.openai_model
        key = settings.openai_api_key
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    async def json(self, method: str, url: str, body: Any = None) -> Any:
        """The JSON answer, or None for anything else (an error status, not JSON, no answer)."""
        if urlsplit(url).netloc != urlsplit(self.origin).netloc:  # pragma: no cover - guard
            return None
        try:
            async with self.session.request(
                method, url, json=body, headers=self.headers, allow_redirects=False
            ) as response:
                if response.status != 200:
                    return None
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def llama_server(self) -> int | None:
        props = await self.json("GET", f"{self.origin}/props")
        settings = props.get("default_generation_settings") if isinstance(props, dict) else None
        return _positive(settings.get("n_ctx")) if isinstance(settings, dict) else None

    async def models(self) -> tuple[int | None, str]:
        """llama-server's `meta.n_ctx` or vLLM's `max_model_len` for our model (or the first)."""
        listing = await self.json("GET", f"{self.base}/models")
        data = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(data, list) or not data:
            return None, ""
        entries = [e for e in data if isinstance(e, dict)]
        ours = [e for e in entries if e.get("id") == self.model] or entries[:1]
        for entry in ours:
            meta = entry.get("meta")
            if isinstance(meta, dict) and _positive(meta.get("n_ctx")):
                return _positive(meta.get("n_ctx")), "GET /v1/models meta.n_ctx"
            if _positive(entry.get("max_model_len")):
                return _positive(entry.get("max_model_len")), "vLLM GET /v1/models max_model_len"
        return None, ""

    async def ollama(self) -> tuple[int | None, str]:
        asked = {"model": self.model, "name": self.model}  # "name": Ollama before 0.5
        show = await self.json("POST", f"{self.origin}/api/show", asked)
        if not isinstance(show, dict):
            return None, ""
        num_ctx = _num_ctx(show.get("parameters"))
        if num_ctx:
            return num_ctx, "Ollama /api/show num_ctx"
        trained = _trained_length(show.get("model_info"))
        ps = await self.json("GET", f"{self.origin}/api/ps")
        names = (self.model, f"{self.model}:latest")
        for entry in ps.get("models") or [] if isinstance(ps, dict) else []:
            if isinstance(entry, dict) and entry.get("name") in names:
                loaded = _positive(entry.get("context_length"))
                if loaded:
                    return loaded, "Ollama /api/ps context_length (the loaded model)"
        if trained is None:
            return None, ""
        return (
            min(trained, OLLAMA_DEFAULT_NUM_CTX),
            "Ollama's default num_ctx (set OLLAMA_CONTEXT_LENGTH or the model's num_ctx to use "
            f"more of its {trained})",
        )

    async def lm_studio(self) -> tuple[int | None, str]:
        listing = await self.json("GET", f"{self.origin}/api/v0/models")
        data = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(data, list):
            return None, ""
        for entry in data:
            if not isinstance(entry, dict) or entry.get("id") != self.model:
                continue
            loaded = _positive(entry.get("loaded_context_length"))
            if loaded:
                return loaded, "LM Studio /api/v0/models loaded_context_length"
            most = _positive(entry.get("max_context_length"))
            if most:
                return most, "LM Studio /api/v0/models max_context_length"
        return None, ""

    async def llama_cpp_python(self) -> bool:
        answer = await self.json("POST", f"{self.origin}/extras/tokenize/count", {"input": "a"})
        return isinstance(answer, dict) and isinstance(answer.get("count"), int)


async def probe(settings: Settings) -> ServerInfo:
    """Asks the server for its window and tokenizer; ServerInfo() when it says nothing."""
    if urlsplit(settings.openai_base_url).hostname in _HOSTED:
        return ServerInfo()
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            prober = _Prober(session, settings)
            props, models, ollama, studio, extras = await asyncio.wait_for(
                asyncio.gather(
                    prober.llama_server(),
                    prober.models(),
                    prober.ollama(),
                    prober.lm_studio(),
                    prober.llama_cpp_python(),
                ),
                PROBE_TIMEOUT + 0.5,
            )
    except (TimeoutError, aiohttp.ClientError) as exc:
        log.debug("server probes failed: %r", exc)
        return ServerInfo()
    if props:
        return ServerInfo(props, "llama-server GET /props n_ctx", LLAMA_SERVER)
    tokenizer = LLAMA_CPP_PYTHON if extras else None
    for window, source in (models, ollama, studio):
        if window:
            return ServerInfo(window, source, tokenizer)
    return ServerInfo(None, "", tokenizer)


@dataclass(frozen=True, slots=True)
class ServerCount:
    tokens: int
    whole: bool  # the whole prompt as sent (template included), or only its texts joined


async def count_prompt(
    settings: Settings, tokenizer: str, messages: Sequence[Mapping[str, str]]
) -> ServerCount | None:
    """The server's own token count of `messages`, or None.

    llama-server renders its chat template and tokenizes that with BOS, which is exactly its
    `usage.prompt_tokens` (asserted, docs/real-servers.md); llama-cpp-python has no template
    endpoint, so there the contents are counted joined by newlines (its BOS left out)."""
    timeout = aiohttp.ClientTimeout(total=COUNT_TIMEOUT)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            prober = _Prober(session, settings)
            if tokenizer == LLAMA_SERVER:
                plain = [{"role": m["role"], "content": m["content"]} for m in messages]
                rendered = await prober.json(
                    "POST", f"{prober.origin}/apply-template", {"messages": plain}
                )
                prompt = rendered.get("prompt") if isinstance(rendered, dict) else None
                if not isinstance(prompt, str):
                    return None
                ids = await prober.json(
                    "POST", f"{prober.origin}/tokenize", {"content": prompt, "add_special": True}
                )
                found = ids.get("tokens") if isinstance(ids, dict) else None
                return ServerCount(len(found), True) if isinstance(found, list) else None
            text = "\n".join(m["content"] for m in messages)
            counted = await prober.json(
                "POST", f"{prober.origin}/extras/tokenize/count", {"input": text}
            )
            number = _positive(counted.get("count")) if isinstance(counted, dict) else None
            return ServerCount(number - 1, False) if number and number > 1 else None
    except (TimeoutError, aiohttp.ClientError):
        return None


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _num_ctx(parameters: Any) -> int | None:
    """`num_ctx 8192` in Ollama's `parameters` (one `name value` per line)."""
    if not isinstance(parameters, str):
        return None
    found = re.search(r"^\s*num_ctx\s+(\d+)\s*$", parameters, re.MULTILINE)
    return int(found.group(1)) or None if found else None


def _trained_length(model_info: Any) -> int | None:
    """`<arch>.context_length` in Ollama's `model_info` (arch from `general.architecture`)."""
    if not isinstance(model_info, dict):
        return None
    arch = model_info.get("general.architecture")
    if isinstance(arch, str) and _positive(model_info.get(f"{arch}.context_length")):
        return _positive(model_info.get(f"{arch}.context_length"))
    lengths = [v for k, v in model_info.items() if k.endswith(".context_length")]
    return _positive(lengths[0]) if lengths else None
