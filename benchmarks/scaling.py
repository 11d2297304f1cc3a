"""Data-parallel scaling on this CPU: images/s of 1 and 2 processes, and equal-steps quality.

Speed: `dcgan train --preset P --steps N` as one process with one thread, one process with two
threads, and `torchrun --nproc_per_node 2` (one thread each), alternated over rounds; each run's
images/s excludes its first 20 steps. The global batch is the same everywhere (2 processes take
half each). Quality (`--quality`): the same recipe for the same number of steps at 1 and 2
processes, for each seed, scored by `dcgan evaluate --num 10000`.

    python benchmarks/scaling.py --rounds 2 --json benchmarks/results/scaling_cpu.json
    python benchmarks/scaling.py --quality --seeds 0,1 --json benchmarks/results/scaling_quality_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from machine import cpu_name

LAYOUTS = {  # name: (processes, threads per process)
    "1 process x 1 thread": (1, 1),
    "1 process x 2 threads": (1, 2),
    "2 processes x 1 thread": (2, 1),
}




def train(processes: int, threads: int, out: Path, args: list[str]) -> str:
    """Run `dcgan train ARGS --out OUT` in `processes` processes of `threads` threads; returns its stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    launcher = [sys.executable, "-m", "dcgan"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), "-m", "dcgan"]
    result = subprocess.run([*launcher, "train", *args, "--out", str(out), "--quiet"], env=env, capture_output=True,
                            text=True)
    if result.returncode != 0:
        sys.exit(f"dcgan train failed:\n{result.stderr[-3000:]}")
    return result.stdout


def images_per_s(stdout: str) -> float:
    return float(re.search(r"images_per_s=([\d.]+)", stdout).group(1))


def speed(args: argparse.Namespace) -> dict:
    """Images/s of each layout, alternated over rounds."""
    recipe = ["--preset", args.preset, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
              "--precision", args.precision, "--sample-every", "0", "--checkpoint-every", "0", "--log-every", "1000"]
    runs: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, (processes, threads) in LAYOUTS.items():
                value = images_per_s(train(processes, threads, Path(tmp) / f"{round_}-{processes}-{threads}", recipe))
                runs[name].append(value)
                print(f"round {round_ + 1}: {name:<24} {value:8.1f} images/s", flush=True)
    summary = {name: {"images_per_s": values, "mean": statistics.mean(values),
                      "sd": statistics.stdev(values) if len(values) > 1 else 0.0} for name, values in runs.items()}
    return {"recipe": " ".join(recipe), "rounds": args.rounds, "layouts": summary}


def quality(args: argparse.Namespace) -> dict:
    """FID and friends of 1 and 2 processes after the same steps, per seed."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for processes in (1, 2):
                out = Path(tmp) / f"seed{seed}-{processes}"
                recipe = ["--preset", args.preset, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                          "--precision", args.precision, "--seed", str(seed), "--sample-every", "0"]
                train(processes, 2 // processes, out, recipe)
                scored = subprocess.run([sys.executable, "-m", "dcgan", "evaluate", "--checkpoint", str(out),
                                         "--num", "10000"], capture_output=True, text=True, check=True)
                result = json.loads(scored.stdout.strip().splitlines()[-1])
                row = {"seed": seed, "processes": processes, **{k: result[k] for k in
                                                                 ("fid", "kid", "precision", "recall")}}
                rows.append(row)
                print(f"seed {seed}, {processes} process(es): FID {row['fid']:.3f} recall {row['recall']:.3f} "
                      f"precision {row['precision']:.3f}", flush=True)
    summary = {}
    for processes in (1, 2):
        fids = [r["fid"] for r in rows if r["processes"] == processes]
        recalls = [r["recall"] for r in rows if r["processes"] == processes]
        summary[processes] = {"fid_mean": statistics.mean(fids), "fid_sd": statistics.stdev(fids) if len(fids) > 1
                              else 0.0, "recall_mean": statistics.mean(recalls)}
    return {"recipe": f"--preset {args.preset} --steps {args.steps} --batch-size {args.batch_size} "
                      f"--precision {args.precision}", "rows": rows, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tutorial")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32, help="the global batch")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quality", action="store_true", help="equal-steps quality instead of speed")
    parser.add_argument("--seeds", type=lambda text: [int(s) for s in text.split(",")], default=[0, 1])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), **(quality(args) if args.quality else speed(args))}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
