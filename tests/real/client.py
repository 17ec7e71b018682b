"""Raw HTTP to the real servers: exactly what came back, nothing interpreted.

The behaviour tests assert on statuses, headers and JSON shapes, so they bypass the OpenAI SDK
(which turns some of these into exceptions or hides them). Every call opens its own connection
and closes it: llama-cpp-python drops the connection after a failed stream, and a pooled
keep-alive connection would turn that into a spurious error on the *next* request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any

import aiohttp

TIMEOUT = aiohttp.ClientTimeout(total=60)


@dataclasses.dataclass
class Reply:
    status: int
    content_type: str
    text: str
    seconds: float

    @property
    def json(self) -> Any:
        return json.loads(self.text)


@dataclasses.dataclass
class Streamed:
    """A server-sent-event response: the `data:` payloads in order, `[DONE]` kept apart."""

    status: int
    content_type: str
    raw: bytes
    events: list[dict[str, Any]]
    done: bool
    seconds: float

    @property
    def usage_events(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("usage")]

    @property
    def finish_reasons(self) -> list[str]:
        return [
            c["finish_reason"]
            for e in self.events
            for c in e.get("choices", [])
            if c.get("finish_reason")
        ]

    @property
    def text(self) -> str:
        return "".join(
            c.get("delta", {}).get("content") or ""
            for e in self.events
            for c in e.get("choices", [])
        )


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=TIMEOUT, connector=aiohttp.TCPConnector(force_close=True))


async def request(method: str, url: str, body: dict[str, Any] | None = None) -> Reply:
    started = time.monotonic()
    async with _session() as session, session.request(method, url, json=body) as response:
        text = await response.text()
        return Reply(
            response.status,
            response.headers.get("Content-Type", ""),
            text,
            time.monotonic() - started,
        )


async def stream(url: str, body: dict[str, Any]) -> Streamed:
    """POSTs with `"stream": true` and collects every `data:` line of the answer."""
    started = time.monotonic()
    async with _session() as session, session.post(url, json={**body, "stream": True}) as r:
        raw = await r.read()
        status, content_type = r.status, r.headers.get("Content-Type", "")
    events: list[dict[str, Any]] = []
    done = False
    for line in raw.decode().splitlines():
        if not line.startswith("data:"):
            continue
        payload = line.removeprefix("data:").strip()
        if payload == "[DONE]":
            done = True
        else:
            events.append(json.loads(payload))
    return Streamed(status, content_type, raw, events, done, time.monotonic() - started)


async def closes_after_stream(origin: str, body: dict[str, Any]) -> bool:
    """Reads one whole streamed reply off a raw socket; then, does the server hang up?"""
    host, port = origin.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    payload = json.dumps({**body, "stream": True}).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    writer.write(head.encode() + payload)
    try:
        received = b""
        while not received.endswith(b"\r\n0\r\n\r\n"):  # the last chunk of the body
            data = await asyncio.wait_for(reader.read(65536), 30)
            assert data, received
            received += data
        try:
            return await asyncio.wait_for(reader.read(1), 1.0) == b""
        except TimeoutError:
            return False
    finally:
        writer.close()
