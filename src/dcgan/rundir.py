"""The run directory: config, metrics, sample grids, plots and checkpoints of one training run."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import torch

from .artifacts import plot_losses, read_metrics, save_grid, save_progress_gif
from .config import TrainConfig, to_toml
from .errors import UserError

METRIC_FIELDS = ("step", "epoch", "d_loss", "g_loss", "d_real", "d_fake", "images_per_s", "wall_time")


class RunDirectory:
    """Paths and writers for `OUT/`: config.toml, metrics.csv, samples/, checkpoints/, plots."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.samples = self.root / "samples"
        self.checkpoints = self.root / "checkpoints"
        self.metrics_csv = self.root / "metrics.csv"
        self._wall_offset = 0.0
        self._started = time.perf_counter()

    @classmethod
    def create(cls, root: str | Path) -> RunDirectory:
        """A new run directory; an existing non-empty one is refused, never overwritten."""
        root = Path(root)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise UserError(f"--out {root}: already exists and is not empty; choose another --out, "
                            f"or continue that run with --resume {root}")
        try:
            for path in (root, root / "samples", root / "checkpoints"):
                path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--out {root}: cannot create the run directory ({exc.strerror})") from None
        return cls(root)

    def start(self, config: TrainConfig) -> None:
        """Write the resolved config and the metrics header of a fresh run."""
        (self.root / "config.toml").write_text(to_toml(config))
        with open(self.metrics_csv, "w", newline="") as handle:
            csv.writer(handle).writerow(METRIC_FIELDS)

    def resume(self, config: TrainConfig, step: int) -> None:
        """Record the continued run's config and drop metric rows written after the checkpoint."""
        (self.root / "config.toml").write_text(to_toml(config))
        self.samples.mkdir(exist_ok=True)
        self.truncate_metrics(step)

    def truncate_metrics(self, step: int) -> None:
        """Keep only rows up to `step`, so a resumed run appends without gaps or repeats."""
        rows = read_metrics(self.metrics_csv) if self.metrics_csv.exists() else []
        kept = [row for row in rows if row["step"] <= step]
        tmp = self.metrics_csv.with_name(".metrics.csv.tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(METRIC_FIELDS)
            for row in kept:
                writer.writerow([_format(row[name]) for name in METRIC_FIELDS])
        os.replace(tmp, self.metrics_csv)
        self._wall_offset = kept[-1]["wall_time"] if kept else 0.0
        self._started = time.perf_counter()

    def log_metrics(self, row: dict[str, float]) -> None:
        """Append one row to metrics.csv (wall_time counts training seconds across resumes)."""
        row = {**row, "wall_time": self._wall_offset + time.perf_counter() - self._started}
        with open(self.metrics_csv, "a", newline="") as handle:
            csv.writer(handle).writerow([_format(row[name]) for name in METRIC_FIELDS])

    def sample_path(self, step: int) -> Path:
        return self.samples / f"step_{step:07d}.png"

    def has_samples(self, step: int) -> bool:
        return self.sample_path(step).exists()

    @torch.no_grad()
    def save_samples(self, generator: torch.nn.Module, noise: torch.Tensor, step: int) -> None:
        """Write the grid of the fixed noise at `step` (batch norm in inference mode)."""
        was_training = generator.training
        generator.eval()
        images = generator(noise)
        generator.train(was_training)
        save_grid(images, self.sample_path(step))

    def finish(self) -> None:
        """Write progress.gif and losses.png from what the run has so far."""
        save_progress_gif(self.samples, self.root / "progress.gif")
        if self.metrics_csv.exists() and read_metrics(self.metrics_csv):
            plot_losses(self.metrics_csv, self.root / "losses.png")


def _format(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else f"{value:.6g}"
