"""Several bot replicas behind a load balancer, for the replica tests and the benchmark.

`Balancer` is a small HTTP load balancer (aiohttp): it spreads the webhook calls it receives
round robin over the replicas, as any load balancer in front of them would, and like most
(Caddy, nginx) it tries the next replica when one refuses the connection (a dead replica), so
Telegram sees a failure only when none answers. Tests can steer a call to a given replica
(`choose`) or make the answer to one update get lost on the way back (`lose_answer`), so
Telegram sends it again. `Replica` is one `python -m telegram_bot` process in webhook mode,
its own port and log, on the shared PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes import FakeOpenAI, FakeTelegram
from tests.test_webhook import WebhookBot, eventually_async, free_port

FORWARDED = ("X-Telegram-Bot-Api-Secret-Token", "Content-Type")


@dataclass
class Routed:
    update_id: int
    replica: int  # index of the replica that answered
    status: int


@dataclass
class Balancer:
    backends: list[str]  # the replicas' origins, http://127.0.0.1:port
    choose: Callable[[dict[str, Any]], int] | None = None
    lose_answer: set[int] = field(default_factory=set)
    routed: list[Routed] = field(default_factory=list)
    port: int = 0
    _next: int = 0
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/telegram/updates"

    async def start(self) -> Balancer:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def replicas_of(self, update_id: int) -> list[int]:
        return [r.replica for r in self.routed if r.update_id == update_id]

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        update = json.loads(body)
        if self.choose is not None:
            first = self.choose(update)
        else:
            first, self._next = self._next, self._next + 1
        headers = {k: v for k, v in request.headers.items() if k in FORWARDED}
        assert self._session is not None
        for step in range(len(self.backends)):
            index = (first + step) % len(self.backends)
            url = self.backends[index] + request.path
            try:
                async with self._session.post(url, data=body, headers=headers) as response:
                    text = await response.read()
                    status = response.status
            except aiohttp.ClientConnectionError:
                continue  # that replica is down: the next one
            self.routed.append(Routed(update["update_id"], index, status))
            if update["update_id"] in self.lose_answer:
                self.lose_answer.discard(update["update_id"])
                return web.Response(status=502, text="answer lost on the way back")
            return web.Response(status=status, body=text)
        return web.Response(status=502, text="no replica answered")


class Replica(WebhookBot):
    """One bot process in webhook mode on PostgreSQL, behind `balancer` (its WEBHOOK_URL)."""

    def __init__(
        self,
        tg: FakeTelegram,
        ai: FakeOpenAI,
        tmp_path: Path,
        name: str,
        dsn: str,
        balancer_url: str,
        port: int,
        **env: str,
    ) -> None:
        super().__init__(
            tg,
            ai,
            tmp_path / name / "unused" / "bot.sqlite3",
            port=str(port),
            DATABASE_URL=dsn,
            WEBHOOK_URL=balancer_url,
            **env,
        )
        self.name = name
        self.log_path = tmp_path / f"{name}.log"


async def ready(bot: WebhookBot, within: float = 120.0) -> None:
    """Waits until the bot's /healthz says 200 (a slow, shared machine: a generous bound)."""

    async def probe() -> int:
        try:
            return (await bot.health())[0]
        except aiohttp.ClientError:
            return 0  # not listening yet

    await eventually_async(probe, lambda status: status == 200, within)


async def start_replicas(
    tg: FakeTelegram, ai: FakeOpenAI, tmp_path: Path, dsn: str, count: int = 2, **env: str
) -> tuple[list[Replica], Balancer]:
    """`count` replicas started together behind a new balancer, each ready (/healthz 200)."""
    ports = [free_port() for _ in range(count)]
    balancer = await Balancer([f"http://127.0.0.1:{port}" for port in ports]).start()
    names = "abcdefgh"
    replicas = [
        Replica(tg, ai, tmp_path, f"replica-{names[i]}", dsn, balancer.url, port, **env)
        for i, port in enumerate(ports)
    ]
    calls = len(tg.calls_to("setWebhook"))
    for replica in replicas:
        await replica.spawn()
    await tg.wait_for("setWebhook", count=calls + count, timeout=90)
    await asyncio.gather(*(ready(replica) for replica in replicas))
    return replicas, balancer
