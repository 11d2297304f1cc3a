"""Channels-last memory order against the contiguous one, whole `dcgan train` processes, alternated.

    python benchmarks/memory_format.py [--rounds 3] [--json PATH]
        --run 'folder=--data PICTURES --steps 200' --run 'dcgan=--data PICTURES --preset dcgan --steps 40' ...

Each `--run NAME=ARGS` is a `dcgan train` command line (in a fresh temporary run directory), run
with `--memory-format contiguous` and with `--memory-format channels-last` in every round; the
order of the two swaps from round to round, so a drift in the machine's speed falls on both. The
training log's images/s (the training steps only, not start-up or clustering) is compared: mean ± sd
over rounds, and the ratio of each round's pair, which decides whether the order pays on this CPU.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from machine import cpu_name
from throughput_dcgan import run_process

VARIANTS = {"contiguous": ["--memory-format", "contiguous"], "channels-last": ["--memory-format", "channels-last"]}


def parse_run(text: str) -> tuple[str, list[str]]:
    """`NAME=ARGS` into the name and the argument list."""
    name, separator, args = text.partition("=")
    if not separator or not name:
        raise SystemExit(f"--run {text!r}: expected NAME=ARGS, e.g. 'folder=--data pictures --steps 200'")
    return name, shlex.split(args)


def summary(values: list[float]) -> str:
    """`mean ± sd` of a few measurements."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {spread:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=ARGS")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    runs = dict(parse_run(text) for text in args.run)

    speeds: dict[str, dict[str, list[float]]] = {name: {variant: [] for variant in VARIANTS} for name in runs}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            order = list(VARIANTS) if round_index % 2 == 0 else list(reversed(VARIANTS))
            for run_index, (name, run_args) in enumerate(runs.items()):
                for variant in order:
                    out = Path(scratch) / f"run{run_index}-round{round_index}-{variant}"
                    command = [sys.executable, "-m", "dcgan", "train", *run_args, *VARIANTS[variant],
                               "--out", str(out)]
                    speed = run_process(command)["images_per_s"]
                    speeds[name][variant].append(speed)
                    print(f"round {round_index + 1}, {name}, {variant}: {speed:.1f} images/s", flush=True)

    print(f"\n{cpu_name()}, {torch.get_num_threads()} threads, PyTorch {torch.__version__}, {args.rounds} rounds\n")
    print("| run | contiguous (images/s) | channels-last (images/s) | ratio per round | mean ratio |")
    print("| --- | --- | --- | --- | --- |")
    results = {}
    for name in runs:
        ratios = [last / first for first, last in zip(speeds[name]["contiguous"], speeds[name]["channels-last"])]
        results[name] = {"args": runs[name], **speeds[name], "ratios": ratios}
        print(f"| {name} | {summary(speeds[name]['contiguous'])} | {summary(speeds[name]['channels-last'])} "
              f"| {', '.join(f'{ratio:.2f}' for ratio in ratios)} | {statistics.mean(ratios):.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "torch": torch.__version__,
                                         "threads": torch.get_num_threads(), "rounds": args.rounds,
                                         "runs": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
