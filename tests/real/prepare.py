"""Builds the real llama.cpp servers, whisper.cpp's server and the tiny models ahead of a test run.

    python -m tests.real.prepare            # build whatever is missing, print where it is
    python -m tests.real.prepare --status   # only say what is cached

The test session builds the same things on demand; this only lets a person (or a CI step with
its own time budget) pay for the compile up front and see its progress in the logs it names.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from tests.real import llama, whisper, whispermodel
from tests.real.tinymodel import TinyModelSpec, ensure_model
from tests.real.tinyvision import TinyProjectorSpec, ensure_projector


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--status", action="store_true", help="report only, build nothing")
    args = parser.parse_args(argv)
    root = llama.cache_dir()
    whisper_root = whisper.cache_dir()
    print(f"cache: {root}, {whisper_root}")
    targets = (
        ("llama-cpp-python", root, llama.python_server_dir(root), llama.ensure_python_server),
        (
            "llama-server",
            root,
            llama.llama_server_binary(root).parent,
            llama.ensure_llama_server,
        ),
        (
            "whisper-server",
            whisper_root,
            whisper.server_binary(whisper_root).parent,
            whisper.ensure_whisper_server,
        ),
    )
    failed = False
    for name, root, directory, ensure in targets:
        record = llama.build_record(directory)
        if record is None and not args.status:
            print(f"{name}: building (log: {root}/*.log) ...", flush=True)
            started = time.monotonic()
            try:
                ensure(root)
            except llama.Unavailable as exc:
                print(f"{name}: UNAVAILABLE: {exc}")
                failed = True
                continue
            print(f"{name}: built in {time.monotonic() - started:.0f} s")
            record = llama.build_record(directory)
        print(f"{name}: {json.dumps(record) if record else 'not built'}")
    print(f"ffmpeg (whisper-server --convert, for OGG/Opus): {whisper.ffmpeg_binary()}")
    if not args.status:
        with llama.cache_lock(llama.cache_dir(), "model"):
            print(f"model: {ensure_model(llama.cache_dir() / 'models', TinyModelSpec())}")
            projector = ensure_projector(llama.cache_dir() / "models", TinyProjectorSpec())
            print(f"mmproj: {projector}")
        with llama.cache_lock(whisper_root, "whisper-model"):
            spec = whispermodel.WhisperModelSpec()
            print(f"whisper model: {whispermodel.ensure_model(whisper_root / 'models', spec)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
