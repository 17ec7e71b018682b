"""Session fixtures: real llama.cpp servers (llama-cpp-python's and the C++ llama-server),
and whisper.cpp's `whisper-server` for speech to text (`whisper_servers`, at the end).

(PostgreSQL's fixtures, `pg_server` and `pg_dsn`, live in conftest_postgres.py and are
registered in tests/conftest.py, for the whole suite.)

Each fixture builds its server on first use on this machine (see `tests/real/llama.py`; minutes,
announced on the terminal), generates the tiny model once (`tinymodel.py`), starts the server
once per session on a free port and stops it at the end. `n_ctx` defaults to 1024; a test that
needs another window asks through indirect parametrisation, which starts a second process:

    @pytest.mark.parametrize("llama_server", [2048], indirect=True)

When a server cannot be built here (no compiler, no cmake, pip failing, or
`TLB_REAL_SERVERS=0`) its tests skip, and the reason is printed as one line at the end of the
run even without `-rs`. A server that was built but does not start is a failure, not a skip.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.real import llama, servers, whisper, whispermodel
from tests.real.servers import RunningServer
from tests.real.tinymodel import TinyModelSpec, ensure_model
from tests.real.tinyvision import TinyProjectorSpec, ensure_projector
from tests.real.whispermodel import WhisperModelSpec

DEFAULT_N_CTX = 1024
# An album of three photos at LLaVA 1.5's 576 tokens each needs more than the default. The
# tiny model's own context length: llama-server caps a larger `-c` to it ("the slot context
# (4096) exceeds the training context of the model (2048) - capping").
VISION_N_CTX = TinyModelSpec().context_length
DISABLE_ENV = "TLB_REAL_SERVERS"

_skipped: dict[str, str] = {}


def _say(config: pytest.Config, line: str) -> None:
    """Writes to the terminal now, through pytest's output capture."""
    capture = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if reporter is None:
        return
    if capture is None:
        reporter.write_line(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


def _skip(what: str, reason: str) -> None:
    _skipped[what] = reason
    pytest.skip(f"{what} unavailable: {reason}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for what, reason in _skipped.items():
        terminalreporter.write_line(f"SKIPPED real {what} tests: {reason}", yellow=True)


@pytest.fixture(scope="session")
def llama_cache() -> Path:
    """The per-machine cache directory (builds, wheels, generated models)."""
    if os.environ.get(DISABLE_ENV, "1") == "0":
        _skip("llama.cpp server", f"disabled by {DISABLE_ENV}=0")
    return llama.cache_dir()


@pytest.fixture(scope="session")
def tiny_model(llama_cache: Path) -> Path:
    with llama.cache_lock(llama_cache, "model"):
        return ensure_model(llama_cache / "models", TinyModelSpec())


@pytest.fixture(scope="session")
def tiny_projector(llama_cache: Path) -> Path:
    """The tiny model's generated vision projector, for llama-server's `--mmproj`."""
    with llama.cache_lock(llama_cache, "model"):
        return ensure_projector(llama_cache / "models", TinyProjectorSpec())


def _built(
    config: pytest.Config,
    what: str,
    build: Callable[[Path], Path],
    root: Path,
    record_dir: Path,
    minutes: str = "15-30",
) -> Path:
    if llama.build_record(record_dir) is None:
        _say(
            config,
            f"\nbuilding {what} into {root} (once per machine; {minutes} minutes on two busy "
            f"cores; log in {root}/*.log)",
        )
    try:
        return build(root)
    except llama.Unavailable as exc:
        _skip(what, str(exc))
        raise  # pragma: no cover - pytest.skip raised already


def _log_dir(factory: pytest.TempPathFactory) -> Path:
    return factory.getbasetemp() / "llama-logs"


def _serve(
    factory: pytest.TempPathFactory,
    name: str,
    argv: Callable[[int], list[str]],
    n_ctx: int,
    log_name: str,
    ready_path: str,
) -> Iterator[RunningServer]:
    """Starts a built server on a free port (`argv` takes the port), yields it, stops it; one
    that was built but does not start is a failure, not a skip."""
    port = servers.free_port()
    try:
        server = servers.start(
            name,
            argv(port),
            port=port,
            n_ctx=n_ctx,
            log_path=_log_dir(factory) / log_name,
            ready_path=ready_path,
        )
    except servers.ServerDidNotStart as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    servers.stop(server)


def _llama_server_binary(config: pytest.Config, cache: Path) -> Path:
    return _built(
        config,
        "llama-server (C++)",
        llama.ensure_llama_server,
        cache,
        llama.llama_server_binary(cache).parent,
    )


@pytest.fixture(scope="session")
def llama_cpp_python_server(
    request: pytest.FixtureRequest,
    llama_cache: Path,
    tiny_model: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningServer]:
    """`python -m llama_cpp.server` (llama-cpp-python) serving the tiny model."""
    n_ctx = int(getattr(request, "param", DEFAULT_N_CTX))
    python = _built(
        request.config,
        "llama-cpp-python server",
        llama.ensure_python_server,
        llama_cache,
        llama.python_server_dir(llama_cache),
    )
    yield from _serve(
        tmp_path_factory,
        "llama-cpp-python",
        lambda port: servers.llama_cpp_python_argv(python, tiny_model, port, n_ctx),
        n_ctx,
        f"llama-cpp-python-{n_ctx}.log",
        "/v1/models",
    )


@pytest.fixture(scope="session")
def llama_server(
    request: pytest.FixtureRequest,
    llama_cache: Path,
    tiny_model: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningServer]:
    """The C++ `llama-server` serving the tiny model with one slot of `n_ctx` tokens."""
    n_ctx = int(getattr(request, "param", DEFAULT_N_CTX))
    binary = _llama_server_binary(request.config, llama_cache)
    yield from _serve(
        tmp_path_factory,
        "llama-server",
        lambda port: servers.llama_server_argv(binary, tiny_model, port, n_ctx),
        n_ctx,
        f"llama-server-{n_ctx}.log",
        "/health",
    )


@pytest.fixture(scope="session")
def llama_server_vision(
    request: pytest.FixtureRequest,
    llama_cache: Path,
    tiny_model: Path,
    tiny_projector: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningServer]:
    """The C++ `llama-server` serving the tiny model with its tiny projector: it takes images."""
    binary = _llama_server_binary(request.config, llama_cache)
    yield from _serve(
        tmp_path_factory,
        "llama-server",
        lambda port: servers.llama_server_argv(
            binary, tiny_model, port, VISION_N_CTX, tiny_projector
        ),
        VISION_N_CTX,
        f"llama-server-vision-{VISION_N_CTX}.log",
        "/health",
    )


@pytest.fixture(params=["llama_cpp_python_server", "llama_server"])
def real_server(request: pytest.FixtureRequest) -> RunningServer:
    """Either server: for the facts that hold for both, asserted once, run twice."""
    server: RunningServer = request.getfixturevalue(request.param)
    return server


# -- whisper.cpp ---------------------------------------------------------------------------------


class WhisperServers:
    """Starts `whisper-server` processes on demand, one per (model, --convert), for the session.

    Each serves a generated model that spells `WhisperModelSpec.words` whatever it hears
    (`whispermodel.py`). `convert=True` makes the server run ffmpeg on every upload, as it must
    to read Telegram's OGG/Opus; where ffmpeg is missing that test skips, with one line.
    """

    def __init__(self, binary: Path, models: Path, logs: Path) -> None:
        self.binary = binary
        self.models = models
        self.logs = logs
        self._running: dict[tuple[WhisperModelSpec, bool, str], RunningServer] = {}

    def start(
        self, spec: WhisperModelSpec, *, convert: bool, path: str = whisper.INFERENCE_PATH
    ) -> RunningServer:
        """A server for `spec` on `path` (README's recipe: the OpenAI-compatible one)."""
        key = (spec, convert, path)
        if key in self._running:
            return self._running[key]
        if convert and whisper.ffmpeg_binary() is None:
            _skip(
                "whisper-server --convert",
                "ffmpeg is not on PATH (Debian: apt-get install ffmpeg); whisper-server needs "
                "it to read OGG/Opus voice notes",
            )
        with llama.cache_lock(self.models.parent, "whisper-model"):
            model = whispermodel.ensure_model(self.models, spec)
        port = servers.free_port()
        name = f"whisper-server-{len(self._running)}-{spec.key()}"
        scratch = self.logs / f"{name}-tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        try:
            server = servers.start(
                "whisper-server",
                whisper.server_argv(
                    self.binary, model, port, convert=convert, tmp_dir=scratch, inference_path=path
                ),
                port=port,
                n_ctx=0,
                log_path=self.logs / f"{name}.log",
                ready_path="/health",
            )
        except servers.ServerDidNotStart as exc:
            pytest.fail(str(exc), pytrace=False)
        self._running[key] = server
        return server

    def stop_all(self) -> None:
        for server in self._running.values():
            servers.stop(server)
        self._running.clear()


@pytest.fixture(scope="session")
def whisper_cache() -> Path:
    """whisper.cpp's per-machine cache directory (the build, generated models)."""
    if os.environ.get(DISABLE_ENV, "1") == "0":
        _skip("whisper.cpp server", f"disabled by {DISABLE_ENV}=0")
    return whisper.cache_dir()


@pytest.fixture(scope="session")
def whisper_servers(
    request: pytest.FixtureRequest,
    whisper_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WhisperServers]:
    """Real `whisper-server` processes, built on first use on this machine (see whisper.py)."""
    binary = _built(
        request.config,
        "whisper-server (whisper.cpp)",
        whisper.ensure_whisper_server,
        whisper_cache,
        whisper.server_binary(whisper_cache).parent,
        minutes="about 11",
    )
    running = WhisperServers(binary, whisper_cache / "models", _log_dir(tmp_path_factory))
    yield running
    running.stop_all()
