"""The real Docker image: built from the Dockerfile with BASE_IMAGE, run as its non-root user,
and its HEALTHCHECK as Docker itself evaluates it, against the fake Bot API and OpenAI servers
on the host network (the container reaches them on 127.0.0.1).

Needs a Docker daemon (DOCKER_HOST, or the default socket) that can run containers with
`--network host`; without one these tests skip and the run ends with one line saying so.
TEST_DOCKER_BASE_IMAGE names the base image to build on (default: the Dockerfile's
BASE_IMAGE), e.g. a mirror's copy, or a stand-in built locally where no registry is reachable.
The first build takes minutes (pip installs the dependencies); Docker's cache makes later ones
quick while the Dockerfile and the package are unchanged.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.fakes import FakeOpenAI, FakeTelegram
from tests.harness import API_KEY, TOKEN
from tests.test_private_chat import ALICE
from tests.test_webhook import SECRET, free_port

pytestmark = pytest.mark.real_server

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
TAG = "telegram-llm-bot:pytest"
BASE_VARIABLE = "TEST_DOCKER_BASE_IMAGE"
BUILD_SECONDS = 1800
WITHIN = 60.0


class _SkipNote:
    """Prints why the Docker tests were skipped at the end of the run, even under -q."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        terminalreporter.write_line(self.reason, yellow=True, bold=True)


def _skip(request: pytest.FixtureRequest, why: str) -> None:
    reason = f"SKIPPED Docker image tests: {why}"
    request.config.pluginmanager.register(_SkipNote(reason), "docker-skip-note")
    pytest.skip(reason)


def default_base_image() -> str:
    found = re.search(r"^ARG BASE_IMAGE=(\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert found, "the Dockerfile declares ARG BASE_IMAGE=<default>"
    return found.group(1)


@pytest.fixture(scope="module")
def image(request: pytest.FixtureRequest) -> str:
    """The image, built once per run from the working tree."""
    if shutil.which("docker") is None:
        _skip(request, "no docker command on PATH")
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        where = os.environ.get("DOCKER_HOST", "the default socket")
        _skip(request, f"no Docker daemon answers at {where} (set DOCKER_HOST)")
    base = os.environ.get(BASE_VARIABLE) or default_base_image()
    arguments = ["--network", "host", "--build-arg", f"BASE_IMAGE={base}", "-t", TAG]
    build = subprocess.run(
        ["docker", "build", *arguments, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=BUILD_SECONDS,
    )
    assert build.returncode == 0, f"docker build on {base} failed:\n{build.stdout[-3000:]}"
    return TAG


async def docker(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "docker", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode().strip()


async def eventually(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool]) -> T:
    deadline = time.monotonic() + WITHIN
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {WITHIN}s; last: {value!r}")
        await asyncio.sleep(0.2)


@pytest.fixture
async def containers() -> AsyncIterator[list[str]]:
    """Names of the containers a test starts; removed afterwards, however it ends."""
    names: list[str] = []
    yield names
    for name in names:
        await docker("rm", "-f", name)


async def run_bot(
    image: str, names: list[str], tg: FakeTelegram, ai: FakeOpenAI, **env: str
) -> str:
    """Starts the bot in a container on the host network; Docker checks its health every
    second (the image's command, the image's check)."""
    name = f"tlb-pytest-{os.getpid()}-{len(names)}"
    names.append(name)
    settings = {
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": ai.base_url,
        "TELEGRAM_API_BASE_URL": tg.base_url,
        "OPENAI_MAX_RETRIES": "0",
        **env,
    }
    flags = [f"--env={key}={value}" for key, value in settings.items()]
    health = ["--health-interval=1s", "--health-start-period=1s", "--health-retries=2"]
    code, out = await docker(
        "run", "-d", "--network=host", f"--name={name}", *health, *flags, image
    )
    assert code == 0, out
    return name


async def health_status(name: str) -> str:
    code, out = await docker("inspect", "--format", "{{json .State.Health}}", name)
    assert code == 0, out
    return str(json.loads(out)["Status"])


async def test_the_image_runs_as_uid_10001_with_a_private_volume_and_offline_encodings(
    image: str,
) -> None:
    code, out = await docker("run", "--rm", image, "sh", "-c", 'id -u; stat -c "%a %u" /data')
    assert (code, out.split("\n")) == (0, ["10001", "700 10001"])

    settings = [f"--env=TELEGRAM_BOT_TOKEN={TOKEN}", "--env=OPENAI_BASE_URL=http://127.0.0.1:9/v1"]
    code, out = await docker("run", "--rm", *settings, image, "telegram-bot", "check")
    assert (code, out) == (0, "Settings OK: model gpt-4o-mini at http://127.0.0.1:9/v1")

    count = "from telegram_bot import tokens; print(tokens.count_text('hello world'))"
    code, out = await docker("run", "--rm", "--network=none", image, "python", "-c", count)
    assert (code, out) == (0, "2"), "the encodings are in the image, no network needed"

    code, out = await docker("image", "inspect", "--format", "{{json .Config.Healthcheck}}", image)
    assert json.loads(out)["Test"] == ["CMD", "telegram-bot", "health"]


async def test_webhook_mode_is_unhealthy_until_ready_then_healthy_answers_and_stops_cleanly(
    image: str, containers: list[str], tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    starting = tg.fail("setWebhook", status=502, times=1_000_000)
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    name = await run_bot(
        image,
        containers,
        tg,
        ai,
        WEBHOOK_URL=f"{origin}/telegram/updates",
        WEBHOOK_LISTEN="127.0.0.1",
        WEBHOOK_PORT=str(port),
        WEBHOOK_SECRET_TOKEN=SECRET,
    )
    code, line = await eventually(
        lambda: docker("exec", name, "telegram-bot", "health"), lambda r: "503" in r[1]
    )
    assert (code, line) == (1, f"unhealthy: {origin}/healthz says 503 (starting)")
    assert await eventually(lambda: health_status(name), lambda s: s == "unhealthy")

    starting.times = 0  # Telegram takes the webhook
    assert await eventually(lambda: health_status(name), lambda s: s == "healthy")
    tg.send_text(ALICE, "from the container", user_id=ALICE)
    await tg.wait_for(
        "sendMessage", lambda c: tg.visible_text(c) == "Echo: from the container", timeout=WITHIN
    )
    code, out = await docker("exec", name, "stat", "-c", "%a %u", "/data", "/data/bot.sqlite3")
    assert (code, out.split("\n")) == (0, ["700 10001", "600 10001"])

    code, out = await docker("stop", "--time=30", name)  # SIGTERM: drain, then exit
    assert code == 0, out
    code, out = await docker("inspect", "--format", "{{.State.ExitCode}}", name)
    assert (code, out) == (0, "0")


async def test_polling_mode_becomes_healthy_once_getupdates_answers(
    image: str, containers: list[str], tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    starting = tg.fail("getMe", status=502, times=1_000_000)
    name = await run_bot(image, containers, tg, ai)
    code, line = await eventually(
        lambda: docker("exec", name, "telegram-bot", "health"), lambda r: r[0] == 1
    )
    assert line == (
        "unhealthy: no heartbeat at /data/bot.sqlite3.alive: starting, draining or not running"
    )
    assert await eventually(lambda: health_status(name), lambda s: s == "unhealthy")

    starting.times = 0
    tg.send_text(ALICE, "polling", user_id=ALICE)
    await tg.wait_for(
        "sendMessage", lambda c: tg.visible_text(c) == "Echo: polling", timeout=WITHIN
    )
    assert await eventually(lambda: health_status(name), lambda s: s == "healthy")
    code, line = await docker("exec", name, "telegram-bot", "health")
    assert code == 0 and line.startswith("healthy: polling (last getUpdates answer ")
