"""An HTTP proxy in front of a real OpenAI-compatible server that keeps every exchange.

The fake OpenAI server records what the bot sends; a real server does not. Put this between
the bot and the real server (the bot's `OPENAI_BASE_URL` is `proxy.base_url`) and each request
is forwarded unchanged, its answer streamed back chunk by chunk as it arrives, and both are kept
in `exchanges`: what the bot really sent (the image parts, the placeholder of a later turn, that
no bot token is in it) next to what the real server answered (its status, its `usage`).
Connections are the proxy's own on both sides (one upstream connection per request), so
connection-level behaviour is not what this is for.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import aiohttp
from aiohttp import web

# Hop-by-hop headers and those aiohttp sets itself for the relayed body.
_SKIPPED = {
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "content-encoding",
}


@dataclasses.dataclass
class Exchange:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    answer: bytes = b""

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def images(self) -> list[bytes]:
        """The decoded bytes of every `data:` URL image part in the request, in order."""
        found = []
        for message in (self.json or {}).get("messages", []):
            content = message.get("content")
            for part in content if isinstance(content, list) else []:
                if part.get("type") == "image_url":
                    url = part["image_url"]["url"]
                    found.append(base64.b64decode(url.split(",", 1)[1]))
        return found

    def streamed_text(self) -> str:
        """The answer's text, joined from a stream's `delta.content` pieces."""
        pieces = []
        for line in self.answer.decode(errors="replace").splitlines():
            payload = line.removeprefix("data:").strip()
            if line.startswith("data:") and payload != "[DONE]":
                for choice in json.loads(payload).get("choices") or []:
                    pieces.append((choice.get("delta") or {}).get("content") or "")
        return "".join(pieces)

    def usage(self) -> dict[str, Any] | None:
        """The server's `usage`: from the JSON answer, or the last stream chunk carrying one."""
        text = self.answer.decode(errors="replace")
        if not text.lstrip().startswith("data:"):
            return dict(json.loads(text).get("usage") or {}) or None
        found = None
        for line in text.splitlines():
            payload = line.removeprefix("data:").strip()
            if line.startswith("data:") and payload != "[DONE]":
                usage = json.loads(payload).get("usage")
                found = usage or found
        return found


class RecordingProxy:
    def __init__(self, upstream_origin: str) -> None:
        self.upstream = upstream_origin.rstrip("/")
        self.exchanges: list[Exchange] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    def chat_requests(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.path.endswith("/chat/completions")]

    async def __aenter__(self) -> RecordingProxy:
        timeout = aiohttp.ClientTimeout(total=120)
        # A fresh upstream connection per request: llama-server closes its side after a
        # stream (docs/real-servers.md, finding 9), and a pooled one would fail the next call.
        connector = aiohttp.TCPConnector(force_close=True)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIPPED}
        exchange = Exchange(request.method, request.path_qs, dict(request.headers), body)
        self.exchanges.append(exchange)
        url = self.upstream + request.path_qs
        async with self._session.request(
            request.method, url, headers=headers, data=body
        ) as upstream:
            exchange.status = upstream.status
            response = web.StreamResponse(status=upstream.status)
            for key, value in upstream.headers.items():
                if key.lower() not in _SKIPPED:
                    response.headers[key] = value
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                exchange.answer += chunk
                await response.write(chunk)
            await response.write_eof()
            return response
