"""Training time until FID first falls below a target, from runs trained with `--eval-every`.

    python benchmarks/time_to_quality.py RUN_DIR... [--target 8.37] [--plot docs/img/fid-vs-time.png]
                                         [--json benchmarks/results/time_to_quality_cpu.json]

Reads each run's metrics.csv: `wall_time` is the training time so far in seconds (evaluations
during training excluded), `fid` the score of the rows where an evaluation ran. Prints, per run,
the first evaluation below the target and its training time; the crossing happened at or before
that time, after the previous evaluation.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from dcgan.plots import pyplot, read_metrics

TUTORIAL_10_EPOCHS_FID = 8.37  # the `tutorial` preset after 10 epochs (README, Baselines)


def fid_curve(run: Path) -> list[tuple[float, int, float]]:
    """(training seconds, step, FID) of every evaluation in a run."""
    rows = read_metrics(run / "metrics.csv")
    return [(row["wall_time"], int(row["step"]), row["fid"]) for row in rows if math.isfinite(row.get("fid", math.nan))]


def first_below(curve: list[tuple[float, int, float]], target: float) -> dict[str, float] | None:
    """The first evaluation whose FID is below `target`, and the one before it."""
    for index, (seconds, step, fid) in enumerate(curve):
        if fid < target:
            before = curve[index - 1][0] if index else 0.0
            return {"seconds": seconds, "step": step, "fid": fid, "previous_evaluation_seconds": before}
    return None


def plot(curves: dict[str, list[tuple[float, int, float]]], target: float, path: Path) -> None:
    """FID against minutes of training, one line per run, with the target drawn across."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, curve in curves.items():
        ax.plot([s / 60 for s, _, _ in curve], [f for _, _, f in curve], marker="o", markersize=3, label=name)
    ax.axhline(target, color="gray", linestyle="--", linewidth=1, label=f"target FID {target:g}")
    ax.set_xlabel("minutes of training (evaluations excluded)")
    ax.set_ylabel("FID (lower is better)")
    ax.set_yscale("log")
    from matplotlib.ticker import FormatStrFormatter

    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--target", type=float, default=TUTORIAL_10_EPOCHS_FID)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    curves = {run.name: fid_curve(run) for run in args.runs}
    results = {}
    for name, curve in curves.items():
        if not curve:
            raise SystemExit(f"{name}: no FID in metrics.csv (train with --eval-every)")
        hit = first_below(curve, args.target)
        results[name] = {"first_below": hit, "last_evaluation": {"seconds": curve[-1][0], "step": curve[-1][1],
                                                                 "fid": curve[-1][2]}}
        when = (f"{hit['seconds'] / 60:5.2f} min (step {hit['step']}, FID {hit['fid']:.2f}; previous evaluation at "
                f"{hit['previous_evaluation_seconds'] / 60:.2f} min)" if hit else "never")
        print(f"{name:>24}: FID < {args.target:g} after {when}; last evaluation: FID {curve[-1][2]:.2f} "
              f"at {curve[-1][0] / 60:.2f} min")
    if args.plot:
        plot(curves, args.target, args.plot)
    if args.json:
        args.json.write_text(json.dumps({"target": args.target, "runs": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
