"""Images/s of `dcgan train` against the tutorial's script, whole processes, alternated in one run.

    python benchmarks/throughput.py [--steps 400] [--rounds 2] [--variant NAME=FLAGS ...]

Each round runs the baseline (`seed_baseline.py` on the PNG layout, as the tutorial reads it)
and then every variant of `dcgan train --preset tutorial --steps N` at batch 32. Both report
images/s after the same 20 warm-up steps; whole-process wall time and peak RSS are recorded
too. Results go to stdout and to benchmarks/results/throughput_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASELINE = ROOT.parent / "shared" / "bench" / "seed_baseline.py"
DEFAULT_VARIANTS = ["default=", "fp32=--precision fp32", "reuse=--reuse-fake"]


def run_process(command: list[str]) -> dict[str, float]:
    """Run one process; return its images/s, wall seconds and peak resident memory (MiB)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    stdout, stderr = process.stdout.read(), process.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {shlex.join(command)}\n{stderr[-2000:]}")
    match = re.search(r"images_per_s=([\d.]+)", stdout)
    if not match:
        raise SystemExit(f"no images_per_s in the output of {shlex.join(command)}")
    return {"images_per_s": float(match.group(1)), "wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE)
    parser.add_argument("--variant", action="append", metavar="NAME=FLAGS",
                        help=f"dcgan train flags to measure (default: {DEFAULT_VARIANTS})")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "throughput_cpu.json")
    args = parser.parse_args()
    variants = dict(v.split("=", 1) for v in (args.variant or DEFAULT_VARIANTS))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-m", "dcgan", "data", "export-png", "--out", str(tmp / "png")],
                       check=True, capture_output=True)
        commands = {"baseline": [sys.executable, str(args.baseline), "--data", str(tmp / "png" / "training"),
                                 "--steps", str(args.steps)]}
        for name, flags in variants.items():
            commands[name] = [sys.executable, "-m", "dcgan", "train", "--preset", "tutorial", "--batch-size", "32",
                              "--steps", str(args.steps), "--quiet", "--sample-every", "0", *shlex.split(flags)]
        results: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
        for round_index in range(args.rounds):
            for name, command in commands.items():
                if name != "baseline":
                    command = [*command, "--out", str(tmp / f"run-{name}-{round_index}")]
                results[name].append(run_process(command))
                print(f"round {round_index + 1} {name:>10}: {results[name][-1]['images_per_s']:7.1f} images/s",
                      flush=True)

    base = statistics.median(r["images_per_s"] for r in results["baseline"])
    summary = {}
    print(f"\n{'variant':>10} {'images/s':>9} {'x baseline':>10} {'wall s':>7} {'peak MiB':>9}")
    for name, runs in results.items():
        speed = statistics.median(r["images_per_s"] for r in runs)
        summary[name] = {"median_images_per_s": speed, "ratio": speed / base, "runs": runs,
                         "flags": variants.get(name, "")}
        print(f"{name:>10} {speed:9.1f} {speed / base:10.2f} {statistics.median(r['wall_s'] for r in runs):7.1f} "
              f"{max(r['peak_rss_mib'] for r in runs):9.0f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "steps": args.steps, "rounds": args.rounds, "batch_size": 32, "machine": platform.processor() or
        platform.machine(), "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "results": summary,
    }, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
