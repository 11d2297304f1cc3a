"""Two variants of the same `dcgan train` command lines, whole processes, alternated round by round.

    python benchmarks/alternated.py [--rounds 3] [--json PATH]
        --variant 'contiguous=--memory-format contiguous' --variant 'channels-last=--memory-format channels-last'
        --run 'folder=--data PICTURES --steps 200' --run 'dcgan=--data PICTURES --preset dcgan --steps 40' ...

Each `--run NAME=ARGS` is a `dcgan train` command line (in a fresh temporary run directory), run
with the flags of each of the two `--variant NAME=FLAGS` in every round (a variant's leading
`KEY=VALUE` words go into the process's environment instead, as in
`--variant 'glibc=DCGAN_KEEP_FREED_MEMORY=0'`); the order of the two swaps from round to round,
so a drift in the machine's speed falls on both. The training log's images/s (the training steps
only, not start-up or clustering) is compared: mean ± sd over rounds, and the ratio of each
round's pair (second variant over first), which decides whether the change pays on this CPU. The
processes' peak resident memory goes into the JSON file beside it.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from machine import cpu_name
from throughput_dcgan import run_process


def parse_named(option: str, text: str) -> tuple[str, list[str]]:
    """`NAME=ARGS` into the name and the argument list."""
    name, separator, args = text.partition("=")
    if not separator or not name:
        raise SystemExit(f"{option} {text!r}: expected NAME=ARGS, e.g. 'folder=--data pictures --steps 200'")
    return name, shlex.split(args)


def split_environment(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """A variant's leading `KEY=VALUE` words (environment variables) and the flags after them."""
    environment = {}
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        key, _, value = words.pop(0).partition("=")
        environment[key] = value
    return environment, words


def summary(values: list[float]) -> str:
    """`mean ± sd` of a few measurements."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {spread:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=ARGS")
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=FLAGS")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    runs = dict(parse_named("--run", text) for text in args.run)
    variants = {}
    for text in args.variant:
        name, words = parse_named("--variant", text)
        variants[name] = split_environment(words)
    if len(variants) != 2:
        raise SystemExit(f"--variant: give two, with different names (got {len(variants)})")
    first, second = variants

    speeds: dict[str, dict[str, list[float]]] = {name: {variant: [] for variant in variants} for name in runs}
    peak_rss: dict[str, dict[str, list[float]]] = {name: {variant: [] for variant in variants} for name in runs}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            order = [first, second] if round_index % 2 == 0 else [second, first]
            for run_index, (name, run_args) in enumerate(runs.items()):
                for variant in order:
                    out = Path(scratch) / f"run{run_index}-round{round_index}-{variant}"
                    environment, flags = variants[variant]
                    command = [sys.executable, "-m", "dcgan", "train", *run_args, *flags, "--out", str(out)]
                    measured = run_process(command, env=environment)
                    speed = measured["images_per_s"]
                    speeds[name][variant].append(speed)
                    peak_rss[name][variant].append(measured["peak_rss_mib"])
                    print(f"round {round_index + 1}, {name}, {variant}: {speed:.1f} images/s", flush=True)

    print(f"\n{cpu_name()}, {torch.get_num_threads()} threads, PyTorch {torch.__version__}, {args.rounds} rounds\n")
    print(f"| run | {first} (images/s) | {second} (images/s) | ratio per round | mean ratio | peak memory (MiB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    results = {}
    for name in runs:
        ratios = [b / a for a, b in zip(speeds[name][first], speeds[name][second])]
        results[name] = {"args": runs[name], **speeds[name], "ratios": ratios, "peak_rss_mib": peak_rss[name]}
        print(f"| {name} | {summary(speeds[name][first])} | {summary(speeds[name][second])} "
              f"| {', '.join(f'{ratio:.2f}' for ratio in ratios)} | {statistics.mean(ratios):.2f} "
              f"| {max(peak_rss[name][first]):.0f}, {max(peak_rss[name][second]):.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "torch": torch.__version__,
                                         "threads": torch.get_num_threads(), "rounds": args.rounds,
                                         "variants": {name: {"environment": environment, "flags": flags}
                                                      for name, (environment, flags) in variants.items()},
                                         "runs": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
