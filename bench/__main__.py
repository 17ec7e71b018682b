"""Measures the real bot against the local fake servers and prints the figures.

    python -m bench                          every figure, full sizes (a few minutes)
    python -m bench --quick                  tiny sizes: proves the rig works, not the speed
    python -m bench --only startup,throughput --repeat 5

Writes bench/results/bench-<UTC time>.json (or --out) with the machine, the git commit and
every run. The bot, the fake Bot API and the fake OpenAI server are separate processes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from pathlib import Path

from .figures import FIGURES, Figure, Sizes
from .report import git, machine, table, write_json


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition")
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of: {', '.join(FIGURES)}"
    )
    parser.add_argument("--repeat", type=int, default=None, help="repetitions per figure")
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SIZE=N",
        help="override one size, e.g. --set memory_chats=2000 (see bench/figures.py: Sizes)",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(FIGURES)
    unknown = set(names) - set(FIGURES)
    if unknown:
        parser.error(f"unknown figures: {', '.join(sorted(unknown))}")
    args.names = names
    return args


async def run(names: list[str], sizes: Sizes) -> list[Figure]:
    figures: list[Figure] = []
    for name in names:
        print(f"… {name}", file=sys.stderr, flush=True)
        result = await FIGURES[name](sizes)
        load = [round(x, 2) for x in os.getloadavg()]
        for figure in result if isinstance(result, list) else [result]:
            # Other work on the machine moves wall-clock figures; say how busy it was.
            figure.details["load_average_after"] = load
            figures.append(figure)
            print(f"  {figure.name}: {figure.value:.4g} {figure.unit}", file=sys.stderr, flush=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.repeat is not None:
        sizes = dataclasses.replace(sizes, repeat=args.repeat, startup_runs=args.repeat)
    for item in args.set:
        name, _, value = item.partition("=")
        current = getattr(sizes, name.strip())
        sizes = dataclasses.replace(sizes, **{name.strip(): type(current)(value)})
    figures = asyncio.run(run(args.names, sizes))
    info, commit = machine(), git()
    print(table(figures))
    print(
        f"\n{info['cores']} cores, {info['cpu']}, Python {info['python']}; "
        f"commit {commit['commit'][:10]}{' (dirty)' if commit['dirty'] else ''}"
    )
    path = write_json(figures, sizes, args.quick, args.out)
    print(f"JSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
