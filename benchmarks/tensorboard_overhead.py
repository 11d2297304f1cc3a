"""What `--tensorboard` costs: images/s and wall time of `dcgan train` with and without it, whole processes, alternated.

    python benchmarks/tensorboard_overhead.py [--steps 1000] [--rounds 3] [--log-every 50] [--sample-every 250]

Each round trains the `tutorial` preset (the cheapest step, so the largest share for the
writer) for --steps at batch 32 on MNIST, once without and once with `--tensorboard`, at the
command line's default row and grid intervals unless told otherwise. images/s is the run's own
figure after its 20 warm-up steps (the rows and grids are written between the clock's readings,
so their cost is in it); wall time adds the start-up, which with the flag includes importing
TensorBoard. Results go to stdout and to benchmarks/results/tensorboard_overhead_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_name
from throughput import run_process

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"off": [], "on": ["--tensorboard"]}


def folder_bytes(folder: Path) -> int:
    """The bytes of the files under `folder` (0 when it does not exist)."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--sample-every", type=int, default=250)
    parser.add_argument("--data", default="mnist", help="any --data of dcgan train (default: the bundled MNIST)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "tensorboard_overhead_cpu.json")
    args = parser.parse_args()

    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds):
            for name, flags in VARIANTS.items():
                out = Path(tmp) / f"run-{name}-{round_index}"
                command = [sys.executable, "-m", "dcgan", "train", "--preset", "tutorial", "--data", args.data,
                           "--batch-size", "32", "--steps", str(args.steps), "--log-every", str(args.log_every),
                           "--sample-every", str(args.sample_every), "--quiet", "--out", str(out), *flags]
                measured = run_process(command)
                measured["event_bytes"] = folder_bytes(out / "tensorboard")
                results[name].append(measured)
                print(f"round {round_index + 1} {name:>3}: {measured['images_per_s']:7.1f} images/s, "
                      f"{measured['wall_s']:6.1f} s", flush=True)

    summary = {name: {"median_images_per_s": statistics.median(r["images_per_s"] for r in runs),
                      "median_wall_s": statistics.median(r["wall_s"] for r in runs),
                      "event_bytes": max(r["event_bytes"] for r in runs), "runs": runs}
               for name, runs in results.items()}
    off, on = summary["off"], summary["on"]
    speed_change = on["median_images_per_s"] / off["median_images_per_s"] - 1
    wall_change = on["median_wall_s"] - off["median_wall_s"]
    print(f"\n--tensorboard: images/s {100 * speed_change:+.1f}%, wall time {wall_change:+.1f} s, "
          f"events {on['event_bytes'] / 1024:.0f} KiB")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "steps": args.steps, "rounds": args.rounds, "batch_size": 32, "log_every": args.log_every,
        "sample_every": args.sample_every, "data": args.data, "machine": cpu_name(), "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"), "images_per_s_change": speed_change, "wall_s_change": wall_change,
        "results": summary,
    }, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
