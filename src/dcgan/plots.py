"""Plots of a run: losses and D's outputs against the step, and FID during training (matplotlib, Agg)."""

from __future__ import annotations

import csv
import math
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Rows of `metrics.csv` as dicts of floats (empty cells are NaN)."""
    with open(path, newline="") as handle:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}
                for row in csv.DictReader(handle)]


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (imported late: it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_losses(metrics_csv: str | Path, path: str | Path) -> None:
    """Plot discriminator and generator losses, and D(x) / D(G(z)), against the step; with adaptive
    augmentation (an `ada_p` column with values), its probability and signal in a third panel."""
    plt = pyplot()
    rows = read_metrics(metrics_csv)
    steps = [r["step"] for r in rows]
    adaptive = any(math.isfinite(r.get("ada_p", math.nan)) for r in rows)
    panels = 3 if adaptive else 2
    fig, axes = plt.subplots(panels, 1, figsize=(8, 3 * panels), sharex=True)
    ax_loss, ax_prob = axes[:2]
    ax_loss.plot(steps, [r["d_loss"] for r in rows], label="discriminator")
    ax_loss.plot(steps, [r["g_loss"] for r in rows], label="generator")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_prob.plot(steps, [r["d_real"] for r in rows], label="D(x)")
    ax_prob.plot(steps, [r["d_fake"] for r in rows], label="D(G(z))")
    ax_prob.set_ylabel("mean probability")
    ax_prob.set_ylim(0, 1)
    ax_prob.legend()
    if adaptive:
        ax_ada = axes[2]
        ax_ada.plot(steps, [r["ada_p"] for r in rows], label="augmentation probability p")
        ax_ada.plot(steps, [r.get("ada_signal", math.nan) for r in rows], label="signal E[sign D(x)]")
        ax_ada.set_ylabel("adaptive augmentation")
        ax_ada.set_ylim(-1.05, 1.05)
        ax_ada.legend()
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_fid(history: list[tuple[int, float]], path: str | Path) -> None:
    """FID against the training step."""
    plt = pyplot()
    points = sorted((s, f) for s, f in history if math.isfinite(f))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([s for s, _ in points], [f for _, f in points], marker="o")
    ax.set_xlabel("step")
    ax.set_ylabel("FID (lower is better)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
