"""The table printed at the end of a run, and the JSON file that keeps every figure.

The JSON records what a figure means nothing without: the machine (cores, CPU model, Python),
the git commit (and whether the tree had local changes), and the exact sizes used.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from .figures import Figure, Sizes
from .rig import ROOT


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


def git() -> dict[str, Any]:
    def run(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    return {"commit": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain"))}


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def table(figures: list[Figure]) -> str:
    rows = [("figure", "median", "unit", "goal", "met", "runs")]
    for fig in figures:
        runs = ", ".join(_fmt(r) for r in fig.runs[:8]) + (" …" if len(fig.runs) > 8 else "")
        met = "-" if fig.met is None else ("yes" if fig.met else "NO")
        rows.append((fig.name, _fmt(fig.value), fig.unit, fig.goal, met, runs))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def write_json(figures: list[Figure], sizes: Sizes, quick: bool, out: Path | None) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = out or ROOT / "bench" / "results" / f"bench-{stamp}{'-quick' if quick else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "when": stamp,
        "quick": quick,
        "machine": machine(),
        "git": git(),
        "sizes": dataclasses.asdict(sizes),
        "figures": [dataclasses.asdict(f) for f in figures],
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
