"""Files a person opens: image grids, the progress animation and the loss plot."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Generator output in [-1, 1], (N, C, H, W) -> uint8 (N, H, W, C) with 0 = -1 (background)."""
    scaled = ((images.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).numpy()


def grid_image(images: np.ndarray, *, columns: int | None = None, padding: int = 2) -> Image.Image:
    """Tile uint8 (N, H, W, C) images into one picture, `columns` per row (default: square)."""
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    canvas = np.zeros((rows * (h + padding) + padding, columns * (w + padding) + padding, c), np.uint8)
    for i in range(n):
        top, left = padding + (i // columns) * (h + padding), padding + (i % columns) * (w + padding)
        canvas[top:top + h, left:left + w] = images[i]
    return Image.fromarray(canvas[..., 0] if c == 1 else canvas)


def save_grid(images: torch.Tensor, path: str | Path, *, columns: int | None = None, scale: int = 2) -> None:
    """Write generator output as a PNG grid, upscaled `scale` times so small digits are visible."""
    image = grid_image(to_uint8(images), columns=columns)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    image.save(path)


def step_of(path: Path) -> int:
    """The step number in a `step_<N>.png` file name."""
    match = re.search(r"step_(\d+)", path.stem)
    return int(match.group(1)) if match else -1


def save_progress_gif(sample_dir: str | Path, path: str | Path, *, frame_ms: int = 300) -> int:
    """Animate the `step_<N>.png` grids in step order; returns the number of frames."""
    frames = sorted(Path(sample_dir).glob("step_*.png"), key=step_of)
    if not frames:
        return 0
    images = [Image.open(frame).convert("L") for frame in frames]
    durations = [frame_ms] * (len(images) - 1) + [frame_ms * 5]  # linger on the final grid
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return len(images)


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
    """Plot discriminator and generator losses, and D(x) / D(G(z)), against the step."""
    plt = pyplot()
    rows = read_metrics(metrics_csv)
    steps = [r["step"] for r in rows]
    fig, (ax_loss, ax_prob) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    ax_loss.plot(steps, [r["d_loss"] for r in rows], label="discriminator")
    ax_loss.plot(steps, [r["g_loss"] for r in rows], label="generator")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_prob.plot(steps, [r["d_real"] for r in rows], label="D(x)")
    ax_prob.plot(steps, [r["d_fake"] for r in rows], label="D(G(z))")
    ax_prob.set_ylabel("mean probability")
    ax_prob.set_xlabel("step")
    ax_prob.set_ylim(0, 1)
    ax_prob.legend()
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
