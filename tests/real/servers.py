"""Starting and stopping a real llama.cpp server process for the test session.

Each server runs as a child process on a free 127.0.0.1 port, its stdout and stderr going to a
log file that every failure message quotes. Start-up is bounded: the process must answer its
readiness endpoint (llama-server's `/health`, which says 503 while the model loads;
llama-cpp-python's `/v1/models`, served once uvicorn is up with the model loaded) within
`START_TIMEOUT_SECONDS`, or it is killed and the test fails with the log's tail. The process
gets its own session, so stopping it also stops anything it spawned, and on Linux it is told to
die with the test process, so a hard-killed run leaves no server behind.

Readiness is polled with urllib, synchronously: the session fixtures that call this are plain
functions, and the tests' own event loops come and go per test.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 10.0
MODEL_ALIAS = "tiny"


@dataclasses.dataclass
class RunningServer:
    """A server process that answered its readiness probe."""

    name: str
    origin: str
    n_ctx: int
    log_path: Path
    process: subprocess.Popen[bytes]
    started_in: float

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (what the bot's `OPENAI_BASE_URL` would be)."""
        return f"{self.origin}/v1"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class ServerDidNotStart(Exception):
    """The server process exited or did not become ready in time; its log follows."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def llama_cpp_python_argv(python: Path, model: Path, port: int, n_ctx: int) -> list[str]:
    return [
        str(python),
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--model_alias",
        MODEL_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        "2",
    ]


def llama_server_argv(
    binary: Path, model: Path, port: int, n_ctx: int, mmproj: Path | None = None
) -> list[str]:
    # One slot: with several, llama-server splits -c between them and each request sees less.
    vision = ["--mmproj", str(mmproj)] if mmproj is not None else []
    return [
        str(binary),
        "--model",
        str(model),
        "--alias",
        MODEL_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ctx-size",
        str(n_ctx),
        "--parallel",
        "1",
        "--threads",
        "2",
        *vision,
    ]


def _die_with_parent() -> None:
    """Runs in the child before exec: on Linux, SIGTERM it when the test process dies.

    A session killed hard (CI's timeout, a closed terminal) never runs the fixtures'
    teardown; without this the servers would outlive it and hold their ports and memory.
    """
    os.setsid()
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start(
    name: str,
    argv: Sequence[str],
    *,
    port: int,
    n_ctx: int,
    log_path: Path,
    ready_path: str,
    timeout: float = START_TIMEOUT_SECONDS,
) -> RunningServer:
    """Launches `argv` and waits until `ready_path` answers 200, or raises ServerDidNotStart."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    origin = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
    server = RunningServer(name, origin, n_ctx, log_path, process, 0.0)
    while not _ready(origin + ready_path):
        if process.poll() is not None:
            raise ServerDidNotStart(
                f"{name} exited with {process.returncode} before it was ready "
                f"(log {log_path}):\n{server.log_tail()}"
            )
        if time.monotonic() - started > timeout:
            stop(server)
            raise ServerDidNotStart(
                f"{name} was not ready after {timeout:.0f} s (log {log_path}):\n{server.log_tail()}"
            )
        time.sleep(0.1)
    server.started_in = time.monotonic() - started
    return server


def stop(server: RunningServer) -> None:
    """SIGTERM to the server's process group, SIGKILL if it lingers."""
    process = server.process
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT_SECONDS)
    except ProcessLookupError:
        process.wait(STOP_TIMEOUT_SECONDS)
