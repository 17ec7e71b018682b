"""Builds the real llama.cpp servers once per machine and caches them between sessions.

Two servers speak the OpenAI API over llama.cpp, and they differ where the bot cares (errors on
context overflow, usage in streams, /props, timings), so the tests run both:

* **llama-cpp-python's** `python -m llama_cpp.server`, from PyPI. It has no wheels there, so pip
  compiles llama.cpp (17 minutes on this shared 2-core box). It gets its own venv, so the
  project's dependencies stay clean, and the compiled wheel is kept, so a lost venv is rebuilt
  without compiling.
* **the C++ `llama-server`**, compiled with cmake from the llama.cpp that the same sdist vendors
  (`vendor/llama.cpp`): one static binary, only the `llama-server` target, no UI, no network
  (32 minutes here: it compiles ggml, llama, common, mtmd and the server).

Everything lives under one directory per llama-cpp-python version (`cache_dir()`), outside any
checkout, so every worktree, clean clone and CI run on the machine reuses it. A cross-process
file lock makes sure only one process builds; the others wait, then find the result. A
finished build leaves a `ready.json`; a failed one leaves `<what>.failed` with the reason, so
later sessions skip at once instead of compiling again for minutes (the marker expires after a
day, or delete it). Any reason the servers cannot be had is raised as `Unavailable`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
CACHE_ENV = "TLB_LLAMA_CACHE"
FAILURE_TTL_SECONDS = 24 * 3600
BUILD_TIMEOUT_SECONDS = 60 * 60
LOCK_TIMEOUT_SECONDS = 90 * 60

# Portable (no -march=native, so one machine's cache also runs on a sibling CPU) and lean:
# nothing but the libraries the Python package loads. mtmd (multimodal) is imported lazily by
# llama-cpp-python's chat handlers only, so LLAVA_BUILD=OFF is safe for text models.
PYTHON_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
)
SERVER_CMAKE_ARGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
)


class Unavailable(Exception):
    """The real llama.cpp servers cannot run on this machine (the reason follows)."""


def cache_dir() -> Path:
    """`$TLB_LLAMA_CACHE`, else `${XDG_CACHE_HOME:-~/.cache}/telegram-llm-bot/llama-cpp/<ver>`."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser() / LLAMA_CPP_PYTHON_VERSION
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "telegram-llm-bot" / "llama-cpp" / LLAMA_CPP_PYTHON_VERSION


@contextmanager
def cache_lock(root: Path, what: str) -> Iterator[None]:
    """Held while `what` in `root` is built or generated, by any process on the machine.

    One lock per artifact, so a test run that only needs the model is not held up for the
    minutes another process spends compiling a server.
    """
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{what}.lock"), timeout=LOCK_TIMEOUT_SECONDS):
        yield


def python_tag() -> str:
    return f"cp{sys.version_info.major}{sys.version_info.minor}"


def python_server_dir(root: Path) -> Path:
    """The venv holding llama-cpp-python[server] (per interpreter: the wheel is cp3XX-specific)."""
    return root / f"venv-{python_tag()}"


def python_server_python(root: Path) -> Path:
    return python_server_dir(root) / "bin" / "python"


def llama_server_binary(root: Path) -> Path:
    return root / "llama-server" / "llama-server"


def build_record(directory: Path) -> dict[str, object] | None:
    """What `ready.json` says about a finished build (None while there is none)."""
    path = directory / "ready.json"
    return json.loads(path.read_text()) if path.exists() else None


def missing_toolchain() -> str | None:
    """Why nothing can be compiled here, or None when cmake and a C/C++ compiler exist."""
    missing = [
        name
        for name, candidates in (
            ("cmake", ("cmake",)),
            ("a C compiler", ("cc", "gcc", "clang")),
            ("a C++ compiler", ("c++", "g++", "clang++")),
        )
        if not any(shutil.which(c) for c in candidates)
    ]
    return f"not on PATH: {', '.join(missing)}" if missing else None


def check_failure(marker: Path) -> None:
    if marker.exists() and time.time() - marker.stat().st_mtime < FAILURE_TTL_SECONDS:
        raise Unavailable(f"{marker.read_text().strip()} (cached; delete {marker} to retry)")


def fail(marker: Path, reason: str) -> Unavailable:
    marker.write_text(reason + "\n")
    return Unavailable(reason)


def run(
    argv: Sequence[str | Path],
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> None:
    """Runs a build step, appending its output to `log`; raises with the log's tail on failure."""
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(map(str, argv))}\n")
        out.flush()
        try:
            subprocess.run(
                [str(a) for a in argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                check=True,
                timeout=BUILD_TIMEOUT_SECONDS,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
            raise Unavailable(f"`{Path(str(argv[0])).name} ...` failed ({exc}); {tail}") from exc


def build_env() -> dict[str, str]:
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 2)
    return {"CMAKE_BUILD_PARALLEL_LEVEL": jobs, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def ensure_python_server(root: Path) -> Path:
    """The interpreter of a venv with llama-cpp-python[server], built and installed if missing."""
    venv = python_server_dir(root)
    if build_record(venv) is not None:
        return python_server_python(root)
    with cache_lock(root, "python-server"):
        if build_record(venv) is not None:
            return python_server_python(root)
        marker = root / f"python-server-{python_tag()}.failed"
        check_failure(marker)
        wheels = root / "wheels"
        wheels.mkdir(exist_ok=True)
        have_wheel = any(wheels.glob(f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}-*.whl"))
        problem = None if have_wheel else missing_toolchain()
        if problem:  # cheap to check again, so not remembered
            raise Unavailable(f"cannot compile llama-cpp-python: {problem}")
        log = root / f"python-server-{python_tag()}.log"
        log.write_text("")
        started = time.monotonic()
        shutil.rmtree(venv, ignore_errors=True)
        python = python_server_python(root)
        pip: list[str | Path] = [python, "-m", "pip"]
        pinned = f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"
        env = {**build_env(), "CMAKE_ARGS": PYTHON_CMAKE_ARGS}
        try:
            run([sys.executable, "-m", "venv", venv], log)
            if not have_wheel:
                # --no-cache-dir: pip's own wheel cache ignores CMAKE_ARGS; ours is `wheels`.
                build_wheel = [*pip, "wheel", "--no-cache-dir", "--no-deps", "-w", wheels]
                run([*build_wheel, pinned], log, env)
            compiled_in = time.monotonic() - started
            server = pinned.replace("python==", "python[server]==")
            run([*pip, "install", "--prefer-binary", "--find-links", wheels, server], log, env)
            run([python, "-c", "import llama_cpp.server.app"], log)
        except Unavailable as exc:
            raise fail(marker, f"llama-cpp-python could not be built: {exc}") from exc
        wheel = next(wheels.glob(f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}-*.whl"))
        record: dict[str, object] = {
            "version": LLAMA_CPP_PYTHON_VERSION,
            "wheel": wheel.name,
            # A wheel found in the cache was compiled earlier, maybe with other CMAKE_ARGS.
            "compiled_now": not have_wheel,
            "cmake_args": PYTHON_CMAKE_ARGS if not have_wheel else None,
            "compile_seconds": round(compiled_in, 1) if not have_wheel else None,
            "total_seconds": round(time.monotonic() - started, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (venv / "ready.json").write_text(json.dumps(record, indent=2) + "\n")
        return python


def _vendored_source(root: Path, log: Path) -> Path:
    """llama.cpp as vendored by the llama-cpp-python sdist, downloaded and unpacked once."""
    sdists = root / "sdist"
    sdists.mkdir(exist_ok=True)
    found = sorted(sdists.glob("llama_cpp_python-*.tar.gz"))
    if not found:
        pinned = f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"
        download = ["download", "--no-deps", "--no-binary", ":all:", "--dest", str(sdists)]
        run([sys.executable, "-m", "pip", *download, pinned], log, build_env())
        found = sorted(sdists.glob("llama_cpp_python-*.tar.gz"))
    if not found:
        raise Unavailable(f"pip download left no llama-cpp-python sdist in {sdists}")
    src = root / "src"
    shutil.rmtree(src, ignore_errors=True)
    with tarfile.open(found[0]) as archive:
        members = [m for m in archive.getmembers() if "/vendor/llama.cpp/" in m.name]
        archive.extractall(src, members=members, filter="data")
    return next(src.glob("*/vendor/llama.cpp"))


def ensure_llama_server(root: Path) -> Path:
    """A static `llama-server` binary compiled from the vendored llama.cpp, built if missing."""
    return build_server(
        root,
        "llama-server",
        llama_server_binary(root),
        _vendored_source,
        SERVER_CMAKE_ARGS,
        {"version": LLAMA_CPP_PYTHON_VERSION},
    )


def build_server(
    root: Path,
    target: str,
    binary: Path,
    source: Callable[[Path, Path], Path],
    cmake_args: Sequence[str],
    record: dict[str, object],
    prefix: Sequence[str] = (),
) -> Path:
    """`binary`, cmake's `target` compiled from `source(root, log)`, built once under the
    cache lock (`<target>.log`, `<target>.failed`, `ready.json` beside the binary; `record`
    goes into the latter). `prefix` runs each cmake step under it (e.g. `nice`)."""
    if build_record(binary.parent) is not None:
        return binary
    with cache_lock(root, target):
        if build_record(binary.parent) is not None:
            return binary
        marker = root / f"{target}.failed"
        check_failure(marker)
        problem = missing_toolchain()
        if problem:
            raise Unavailable(f"cannot compile {target}: {problem}")
        log = root / f"{target}.log"
        log.write_text("")
        started = time.monotonic()
        build = root / f"{target}-build"
        try:
            tree = source(root, log)
            shutil.rmtree(build, ignore_errors=True)
            run([*prefix, "cmake", "-S", tree, "-B", build, *cmake_args], log, build_env())
            run([*prefix, "cmake", "--build", build, "--target", target], log, build_env())
            built = next(build.glob(f"bin/{target}"), None)
            if built is None:
                raise Unavailable(f"cmake finished but left no bin/{target} in {build}")
            binary.parent.mkdir(exist_ok=True)
            shutil.copy2(built, binary)
        except Unavailable as exc:
            raise fail(marker, f"{target} could not be built: {exc}") from exc
        finally:
            shutil.rmtree(build, ignore_errors=True)
            shutil.rmtree(root / "src", ignore_errors=True)
        record = {
            **record,
            "cmake_args": list(cmake_args),
            "compile_seconds": round(time.monotonic() - started, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (binary.parent / "ready.json").write_text(json.dumps(record, indent=2) + "\n")
        return binary
