"""Quality on a folder of your own images: recipes trained for the same time, scored in a feature
network trained on that folder.

    python benchmarks/folder_quality.py --data FOLDER --minutes 5 --seeds 0 \\
        --recipe "dcgan=--preset dcgan" \\
        --recipe "dcgan+clusters=--preset dcgan --clusters 8 --mode-seeking 1 --ema-decay 0.999" \\
        --json benchmarks/results/oxygen_quality_cpu.json --grids docs/img

A feature network is trained first (`dcgan classifier train`, the folder's class subfolders as
classes, a seeded 10% held out). Each recipe then trains for `--minutes` of training time
(`--time-limit` alone), and `dcgan evaluate` scores `--num` samples against the whole folder. The
final grid of each run is copied to `--grids` as `<folder>-<recipe>-grid.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import cpu_name, dcgan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--recipe", action="append", required=True, metavar="NAME=FLAGS")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--num", type=int, default=2000, help="samples scored per run")
    parser.add_argument("--classifier-epochs", type=int, default=12)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--grids", type=Path)
    args = parser.parse_args()
    recipes = dict(recipe.split("=", 1) for recipe in args.recipe)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        classifier = tmp / "features.pt"
        report = dcgan("classifier", "train", "--data", args.data, "--image-size", args.image_size, "--channels", 3,
                       "--epochs", args.classifier_epochs, "--out", classifier, "--quiet")
        print(report.strip(), flush=True)
        floor = json.loads(dcgan("evaluate", "--samples", _real_samples(args, tmp), "--classifier", classifier,
                                 "--reference", args.data, "--reference-split", "train",
                                 "--num", args.num).strip().splitlines()[-1])
        print(f"real images against the folder: FID {floor['fid']:.3f} recall {floor['recall']:.3f}", flush=True)
        for seed in seeds:
            for name, flags in recipes.items():
                run = tmp / f"{name}-{seed}"
                out = dcgan("train", "--data", args.data, *shlex.split(flags), "--image-size", args.image_size,
                            "--time-limit", args.minutes, "--seed", seed, "--quiet", "--out", run)
                steps = int(out.split("step=")[1].split()[0])
                scores = json.loads(dcgan("evaluate", "--checkpoint", run, "--classifier", classifier, "--reference",
                                          args.data, "--reference-split", "train", "--num", args.num,
                                          "--seed", seed).strip().splitlines()[-1])
                row = {"recipe": name, "flags": flags, "seed": seed, "steps": steps,
                       **{k: scores[k] for k in ("fid", "kid", "precision", "recall")}}
                rows.append(row)
                print(f"{name} seed {seed}: {steps} steps, FID {row['fid']:.3f}, recall {row['recall']:.3f}, "
                      f"precision {row['precision']:.3f}", flush=True)
                if args.grids:
                    args.grids.mkdir(parents=True, exist_ok=True)
                    grid = sorted((run / "samples").glob("step_*.png"))[-1]
                    shutil.copy(grid, args.grids / f"{args.data.name}-{name}-grid.png")
    summary = {name: {"fid_mean": statistics.mean(r["fid"] for r in rows if r["recipe"] == name),
                      "recall_mean": statistics.mean(r["recall"] for r in rows if r["recipe"] == name)}
               for name in recipes}
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), "data": str(args.data), "minutes": args.minutes,
              "classifier": report.strip(), "real_data_floor": {k: floor[k] for k in ("fid", "recall", "precision")},
              "rows": rows, "summary": summary}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


def _real_samples(args: argparse.Namespace, tmp: Path) -> Path:
    """The folder's own images as a sample file: the floor a perfect generator would reach."""
    code = ("import sys, numpy as np; from dcgan.data import load_data; "
            f"d = load_data({str(args.data)!r}, channels=3, image_size={args.image_size}); "
            f"np.save({str(tmp / 'real.npy')!r}, d.images.permute(0, 2, 3, 1).numpy())")
    subprocess.run([sys.executable, "-c", code], check=True)
    return tmp / "real.npy"


if __name__ == "__main__":
    main()
