"""deploy/Caddyfile, run by a real Caddy, in front of two real bot processes in webhook mode on
a real PostgreSQL: the fake Bot API posts every update to Caddy, as Telegram would post to
compose.yaml's proxy.

The Caddyfile is used as written, with its variables set for this machine (plain HTTP on a
loopback port instead of a domain with TLS; the replicas on loopback ports instead of `bot1`
and `bot2`); only Caddy's admin endpoint is turned off, so the test never collides with
another Caddy. Skipped, with one line, where no `caddy` binary is installed (Debian:
`apt install caddy`) or no PostgreSQL is available.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes import FakeOpenAI, FakeTelegram
from tests.test_webhook import WebhookBot, eventually_async, free_port, healthy

pytestmark = pytest.mark.real_server

ROOT = Path(__file__).resolve().parents[2]
WEBHOOK_PATH = "/telegram/updates"
MODEL_CALL = "model call chat="
WITHIN = 30.0


class _SkipNote:
    def __init__(self, reason: str) -> None:
        self.reason = reason

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        terminalreporter.write_line(self.reason, yellow=True, bold=True)


class Proxy:
    def __init__(self, port: int, upstreams: list[int]) -> None:
        self.origin = f"http://127.0.0.1:{port}"
        self.upstreams = upstreams

    async def get(self, path: str) -> int:
        async with aiohttp.ClientSession() as http, http.get(f"{self.origin}{path}") as r:
            return r.status


def adapt_caddyfile(binary: str, env: dict[str, str]) -> dict[str, Any]:
    """deploy/Caddyfile as Caddy's JSON, its variables taken from `env`."""
    adapted = subprocess.run(
        [binary, "adapt", "--config", str(ROOT / "deploy" / "Caddyfile")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    config: dict[str, Any] = json.loads(adapted.stdout)
    return config


@pytest.fixture
async def caddy(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Proxy]:
    """Caddy on a free port, proxying to two free ports where the replicas will listen."""
    binary = shutil.which("caddy")
    if binary is None:
        reason = "SKIPPED Caddy tests: no caddy binary on PATH (Debian: apt install caddy)"
        request.config.pluginmanager.register(_SkipNote(reason), "caddy-skip-note")
        pytest.skip(reason)
    proxy = Proxy(free_port(), [free_port(), free_port()])
    home = tmp_path / "caddy"
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home),
        "XDG_CONFIG_HOME": str(home),
        "BOT_DOMAIN": proxy.origin,
        "WEBHOOK_PATH": WEBHOOK_PATH,
        "BOT_UPSTREAMS": " ".join(f"127.0.0.1:{port}" for port in proxy.upstreams),
    }
    config = adapt_caddyfile(binary, env)
    config["admin"] = {"disabled": True}
    (home / "caddy.json").write_text(json.dumps(config))
    with (home / "caddy.log").open("w") as log:
        process = await asyncio.create_subprocess_exec(
            binary, "run", "--config", str(home / "caddy.json"), env=env, stdout=log, stderr=log
        )

    async def answering() -> int:
        try:
            return await proxy.get("/")
        except aiohttp.ClientError:
            return 0

    try:
        await eventually_async(answering, lambda status: status == 404, within=WITHIN)
        yield proxy
    finally:
        process.kill()
        await process.wait()


@pytest.fixture
async def replicas(
    caddy: Proxy, tg: FakeTelegram, ai: FakeOpenAI, tmp_path: Path, pg_dsn: str
) -> AsyncIterator[list[WebhookBot]]:
    """Two bot processes on one PostgreSQL database, behind Caddy; not started."""
    bots = []
    for name, port in zip("ab", caddy.upstreams, strict=True):
        db_path = tmp_path / name / "data" / "bot.sqlite3"
        db_path.parent.mkdir(parents=True)
        bot = WebhookBot(
            tg,
            ai,
            db_path,
            port=str(port),
            WEBHOOK_URL=f"{caddy.origin}{WEBHOOK_PATH}",
            DATABASE_URL=pg_dsn,
            SHUTDOWN_GRACE="1",
        )
        bots.append(bot)
    yield bots
    for bot in bots:
        if bot.proc is not None and bot.proc.returncode is None:
            bot.proc.kill()
            await bot.proc.wait()


async def health_of(bot: WebhookBot) -> tuple[int, str]:
    try:
        return await bot.health()
    except aiohttp.ClientError:
        return 0, "not listening"


def handled(bot: WebhookBot) -> int:
    return bot.log.count(MODEL_CALL) if bot.log_path.exists() else 0


async def ask(tg: FakeTelegram, chat_id: int) -> None:
    """A message from a new chat, and its answer, through Caddy and whichever replica."""
    text = f"hello from {chat_id}"
    tg.send_text(chat_id, text, user_id=chat_id)
    await tg.wait_for(
        "sendMessage", lambda c: tg.visible_text(c) == f"Echo: {text}", timeout=WITHIN
    )


async def test_caddy_sends_updates_only_to_ready_replicas_and_both_share_the_load(
    caddy: Proxy, replicas: list[WebhookBot], tg: FakeTelegram
) -> None:
    a, b = replicas
    await a.start()
    await healthy(a)
    # b is not running: Caddy's health check takes it out, and every update reaches a.
    for chat in range(1001, 1005):
        await ask(tg, chat)
    assert (handled(a), handled(b)) == (4, 0)
    # Only the webhook path is public: neither /healthz nor anything else.
    assert (await caddy.get("/healthz"), await caddy.get("/")) == (404, 404)

    # b starts but is not ready (setWebhook keeps failing): its /healthz says 503, so Caddy
    # keeps sending everything to a (b would take updates and answer them only once started).
    starting = tg.fail("setWebhook", status=502, times=1_000_000)
    await b.spawn()
    await eventually_async(lambda: health_of(b), lambda health: health == (503, "starting"))
    for chat in range(1101, 1105):
        await ask(tg, chat)
    assert (handled(a), handled(b)) == (8, 0)

    starting.times = 0
    await healthy(b)
    chat = 2000
    while handled(b) == 0:  # until Caddy's next check (every 2 s) finds b ready
        chat += 1
        await ask(tg, chat)
        assert chat < 2000 + 200, "Caddy never sent an update to the second replica"
    before_a, before_b = handled(a), handled(b)
    for chat in range(3001, 3007):  # round robin: each replica gets some
        await ask(tg, chat)
    assert handled(a) > before_a and handled(b) > before_b
    assert handled(a) + handled(b) == before_a + before_b + 6, "each answered once"

    # a drains and stops: nothing sent meanwhile is lost, b answers it all.
    assert a.proc is not None
    a.proc.send_signal(signal.SIGTERM)
    assert await a.wait() == 0
    stopped_at = handled(a)
    for chat in range(4001, 4005):
        await ask(tg, chat)
    assert handled(a) == stopped_at
    failed = [d for d in tg.webhook.deliveries.items if not d.ok]
    assert all(d.status != 404 for d in failed), "every update reached the webhook path"
