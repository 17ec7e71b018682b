"""Smoke test of the benchmark: `python -m bench` still runs end to end and writes its JSON.

No figure is asserted: timings on a shared CI machine mean nothing. This only keeps the rig
(fakes in their own processes, the real bot as a subprocess, /proc accounting) from rotting.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_quick_run_writes_every_requested_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--only",
            "startup,throughput",
            "--set",
            "startup_runs=1",
            "--set",
            "throughput_messages=20",
            "--set",
            "throughput_chats=5",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["quick"] is True
    assert result["machine"]["cores"] >= 1
    assert result["machine"]["python"]
    assert len(result["git"]["commit"]) == 40
    names = [figure["name"] for figure in result["figures"]]
    assert names == ["start-up", "throughput", "CPU per reply"]
    assert all(figure["value"] > 0 for figure in result["figures"])
    assert "| throughput" in done.stdout
