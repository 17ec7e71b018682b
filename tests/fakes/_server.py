"""Plumbing shared by the fake servers.

Both fakes need the same things: an aiohttp server on an ephemeral loopback port that stops
promptly even while requests are parked (long polls, hangs), a journal of received requests that
tests can *await* instead of polling, and a standalone mode so a benchmark driver in another
process can use them. Keeping that here lets each fake only describe its protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import socket
from collections.abc import Callable
from typing import Any, Generic, Self, TypeVar

from aiohttp import web

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long aiohttp may wait for in-flight handlers on stop. Parked handlers are woken through
# `FakeServer.closing`, so this only bounds handlers that ignore it.
_SHUTDOWN_TIMEOUT = 1.0


class Journal(Generic[T]):
    """Append-only record of requests that tests can await.

    Each append fires the current "generation" event and installs a fresh one, so a waiter wakes
    once per new entry and only scans entries it has not seen yet: no sleeps, no O(n²) rescans,
    even when a soak test records tens of thousands of requests.
    """

    def __init__(self) -> None:
        self.items: list[T] = []
        self._changed = asyncio.Event()

    def append(self, item: T) -> None:
        self.items.append(item)
        self._notify()

    def clear(self) -> None:
        """Empty the journal in place so references handed out earlier stay the live list."""
        self.items.clear()
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for(
        self,
        match: Callable[[T], bool],
        count: int,
        seconds: float,
        since: int = 0,
    ) -> list[T]:
        """Return the first `count` matching entries at index >= `since`, waiting if needed.

        Raises TimeoutError (from asyncio.timeout) if they do not all arrive within `seconds`.
        """
        found: list[T] = []
        scanned = since
        async with asyncio.timeout(seconds):
            while True:
                changed = self._changed  # taken before scanning so no append can slip between
                if scanned > len(self.items):  # the journal was cleared under us
                    scanned = 0
                new = self.items[scanned:]
                scanned += len(new)
                found.extend(item for item in new if match(item))
                if len(found) >= count:
                    return found[:count]
                await changed.wait()


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """Serialise with the stdlib once; aiohttp's json_response adds nothing we need."""
    return web.Response(
        body=json.dumps(payload, ensure_ascii=False, default=repr).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def close_without_answer(
    request: web.Request, response: web.StreamResponse | None = None
) -> web.StreamResponse:
    """Close the client's connection mid-exchange, like a proxy or a network fault would.

    aiohttp still wants a response object back (pass the one already prepared, for a stream cut
    halfway); writing it fails with ConnectionError, which aiohttp expects and handles quietly.
    """
    transport = request.transport
    if transport is not None:
        transport.close()
    return response if response is not None else web.Response(status=499)


class FakeServer:
    """An aiohttp app on `host`:ephemeral-port that can be used as an async context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self.closing = asyncio.Event()

    def make_app(self) -> web.Application:
        raise NotImplementedError

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> Self:
        """Bind first, then serve: binding ourselves is the reliable way to learn the port."""
        if self._runner is not None:
            return self
        self.closing = asyncio.Event()
        runner = web.AppRunner(
            self.make_app(),
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        sock = _bind(self.host, self.port)
        await web.SockSite(runner, sock, backlog=1024).start()
        self.port = sock.getsockname()[1]
        self._runner = runner
        log.debug("%s listening on %s", type(self).__name__, self.origin)
        return self

    async def stop(self) -> None:
        """Wake every parked handler, then let aiohttp close connections and the socket."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self.closing.set()
        self.on_closing()
        await runner.cleanup()

    def on_closing(self) -> None:
        """Hook for subclasses whose handlers wait on something other than `closing`."""

    async def sleep(self, seconds: float) -> None:
        """A sleep that ends early when the server stops, so stop() never waits on latency."""
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.closing.wait()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def standalone_parser(description: str) -> argparse.ArgumentParser:
    """The options every fake accepts when run as `python -m tests.fakes.<name>`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log-level", default="WARNING")
    return parser


async def serve_until_signalled(server: FakeServer) -> None:
    """Start, announce `READY <base_url>` for the parent process, and run until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    print(f"READY {server.base_url}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
