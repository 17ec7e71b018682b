"""A TCP proxy in front of PostgreSQL that counts round trips, for tests and measurements.

A client of the wire protocol waits for the server only after a message that asks it to
answer now: a simple Query ('Q'), a Sync ('S', which ends an extended-protocol exchange such as
Bind/Execute) or a Flush ('H': asyncpg sends Parse/Describe/Flush and waits for the statement's
description before it binds, when it keeps no prepared statements). So the number of those
messages the client sent is the number of round trips it made. The proxy reads the client's
stream message by message (type byte, 4-byte length; the start-up message has no type byte) and
forwards every byte unchanged. Clients must connect without TLS (`sslmode=disable`), or the
proxy would see ciphertext.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from urllib.parse import urlencode, urlsplit


class RoundTripCounter:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.round_trips = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, port: int = 0) -> None:
        """Listens on `port` (any free one by default; the same one again after `stop`)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)

    async def stop(self) -> None:
        """Stops listening and cuts every connection: the database is gone, as clients see it."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        server_in, server_out = await asyncio.open_connection(*self.upstream)
        tasks = [
            asyncio.create_task(self._count(client_in, server_out)),
            asyncio.create_task(self._pipe(server_in, client_out)),
        ]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for writer in (client_out, server_out):
                writer.close()
            self._tasks.difference_update(tasks)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()

    async def _count(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError):
            startup = await source.readexactly(4)  # length, then the rest: no type byte
            sink.write(startup + await source.readexactly(struct.unpack("!I", startup)[0] - 4))
            self.round_trips += 1
            while True:
                header = await source.readexactly(5)
                kind, length = header[:1], struct.unpack("!I", header[1:])[0]
                body = await source.readexactly(length - 4)
                if kind in (b"Q", b"S", b"H"):
                    self.round_trips += 1
                sink.write(header + body)
                await sink.drain()

    def dsn_through(self, dsn: str) -> str:
        """`dsn`, pointed at this proxy, without TLS."""
        parts = urlsplit(dsn)
        auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        query = "&".join(q for q in (parts.query, urlencode({"sslmode": "disable"})) if q)
        return parts._replace(netloc=f"{auth}127.0.0.1:{self.port}", query=query).geturl()


@contextlib.asynccontextmanager
async def counting(dsn: str) -> AsyncIterator[tuple[RoundTripCounter, str]]:
    """A counter in front of the server `dsn` names, and the DSN that goes through it."""
    parts = urlsplit(dsn)
    counter = RoundTripCounter(parts.hostname or "127.0.0.1", parts.port or 5432)
    await counter.start()
    try:
        yield counter, counter.dsn_through(dsn)
    finally:
        await counter.stop()
