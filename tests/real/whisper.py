"""Builds whisper.cpp's `whisper-server` once per machine and caches it between sessions.

The real speech-to-text server for the voice tests: whisper.cpp's HTTP server, compiled with
cmake from the whisper.cpp that the `pywhispercpp` sdist on PyPI vendors (no other download
is possible here). It is built like `llama.py` builds llama-server: one static binary, only the
`whisper-server` target, portable (no -march=native), under `nice` so the shared cores stay
usable, into one directory per pywhispercpp version beside the llama.cpp cache, under a
cross-process file lock. A finished build leaves `ready.json` (with the compile time); a failed
one leaves `whisper-server.failed` with the reason, so later sessions skip at once instead of
compiling again (the marker expires after a day, or delete it).

`ffmpeg_binary()` says whether the server can be started with `--convert`, which is how it
reads Telegram's OGG/Opus voice notes (it runs the `ffmpeg` program on each upload; Debian's
`ffmpeg` package provides it). Without it the server reads WAV, MP3 and FLAC only.
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
from pathlib import Path

from tests.real.llama import CACHE_ENV, Unavailable, build_env, build_server, run

PYWHISPERCPP_VERSION = "1.5.1"  # vendors whisper.cpp 1.8.5
NICE = ("nice", "-n", "10")
SERVER_CMAKE_ARGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DWHISPER_BUILD_TESTS=OFF",
    "-DWHISPER_BUILD_EXAMPLES=ON",
    "-DWHISPER_BUILD_SERVER=ON",
    "-DWHISPER_SDL2=OFF",
    "-DWHISPER_CURL=OFF",
    "-DWHISPER_FFMPEG=OFF",
)


def cache_dir() -> Path:
    """`$TLB_LLAMA_CACHE/whisper-cpp-<ver>`, else `~/.cache/telegram-llm-bot/whisper-cpp/<ver>`.

    (`~/.cache` is `$XDG_CACHE_HOME` when set.)
    """
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser() / f"whisper-cpp-{PYWHISPERCPP_VERSION}"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "telegram-llm-bot" / "whisper-cpp" / PYWHISPERCPP_VERSION


def server_binary(root: Path) -> Path:
    return root / "whisper-server" / "whisper-server"


def ffmpeg_binary() -> str | None:
    """The `ffmpeg` program `whisper-server --convert` runs, or None when it is not on PATH."""
    return shutil.which("ffmpeg")


def _vendored_source(root: Path, log: Path) -> Path:
    """whisper.cpp as vendored by the pywhispercpp sdist, downloaded and unpacked once."""
    sdists = root / "sdist"
    sdists.mkdir(exist_ok=True)
    found = sorted(sdists.glob("pywhispercpp-*.tar.gz"))
    if not found:
        # Only pywhispercpp as source: its build requirements (cmake, ninja) come as wheels
        # for pip's metadata step, instead of being compiled too.
        pinned = f"pywhispercpp=={PYWHISPERCPP_VERSION}"
        download = ["download", "--no-deps", "--no-binary", "pywhispercpp", "--dest", str(sdists)]
        run([*NICE, sys.executable, "-m", "pip", *download, pinned], log, build_env())
        found = sorted(sdists.glob("pywhispercpp-*.tar.gz"))
    if not found:
        raise Unavailable(f"pip download left no pywhispercpp sdist in {sdists}")
    src = root / "src"
    shutil.rmtree(src, ignore_errors=True)
    with tarfile.open(found[0]) as archive:
        members = [m for m in archive.getmembers() if "/whisper.cpp/" in m.name]
        archive.extractall(src, members=members, filter="data")
    source = next(src.glob("*/whisper.cpp"), None)
    if source is None or not (source / "examples" / "server" / "server.cpp").exists():
        raise Unavailable(f"the pywhispercpp sdist in {sdists} has no whisper.cpp server")
    return source


def ensure_whisper_server(root: Path) -> Path:
    """A static `whisper-server` binary compiled from the vendored whisper.cpp, built if missing."""
    return build_server(
        root,
        "whisper-server",
        server_binary(root),
        _vendored_source,
        SERVER_CMAKE_ARGS,
        {"pywhispercpp": PYWHISPERCPP_VERSION},
        prefix=NICE,
    )


# The bot posts to TRANSCRIPTION_BASE_URL + "/audio/transcriptions"; whisper-server serves one
# path, `/inference` unless told otherwise (README's recipe uses this one too).
INFERENCE_PATH = "/v1/audio/transcriptions"


def server_argv(
    binary: Path,
    model: Path,
    port: int,
    *,
    convert: bool,
    tmp_dir: Path | None = None,
    inference_path: str = INFERENCE_PATH,
) -> list[str]:
    """`whisper-server` on 127.0.0.1:`port`, on `inference_path`, as README's recipe starts it
    (timestamps on, its default); `convert` adds `--convert`, so ffmpeg turns each upload into
    16 kHz WAV first (in `tmp_dir`)."""
    argv = [
        str(binary),
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--inference-path",
        inference_path,
        "--threads",
        "1",
    ]
    if convert:
        argv += ["--convert", "--tmp-dir", str(tmp_dir or Path.cwd())]
    return argv
