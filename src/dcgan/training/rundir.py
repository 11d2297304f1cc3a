"""The run directory: config, metrics, sample grids, plots and checkpoints of one training run."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import torch

from ..config import TrainConfig, to_toml
from ..errors import UserError
from ..files import is_temporary, replace_file, writing
from ..images import save_grid, save_progress_gif, step_of
from ..ops import eval_mode
from ..plots import plot_losses, read_metrics
from .lock import LOCK_FILE

# Written by `--eval-every` at the steps it scores; empty in the other rows.
EVAL_FIELDS = ("fid", "kid", "precision", "recall", "classes_covered", "class_entropy", "confidence", "class_match")
# Written with adaptive augmentation (`--ada-target`): its probability p and last signal r; empty without it.
ADA_FIELDS = ("ada_p", "ada_signal")
METRIC_FIELDS = ("step", "epoch", "d_loss", "g_loss", "d_real", "d_fake", "images_per_s", "wall_time", *ADA_FIELDS,
                 *EVAL_FIELDS)


JOB_FILE = ".torchrun-job"


def started_by(root: Path, job: str) -> bool:
    """Whether the run directory `root` was started by torchrun job `job` (so a restart may continue it)."""
    try:
        return bool(job) and (root / JOB_FILE).read_text().strip() == job
    except OSError:
        return False


class RunDirectory:
    """Paths and writers for `OUT/`: config.toml, metrics.csv, samples/, checkpoints/, plots."""

    def __init__(self, root: str | Path, *, job: str = "") -> None:
        self.root = Path(root)
        self.job = job  # torchrun's job id: written into the run, so a restarted job knows the run as its own
        self.samples = self.root / "samples"
        self.checkpoints = self.root / "checkpoints"
        self.metrics_csv = self.root / "metrics.csv"
        self.last_checkpoint = self.checkpoints / "last.pt"

    @classmethod
    def create(cls, root: str | Path) -> RunDirectory:
        """A new run directory; an existing one with anything in it but a lock file is refused, never overwritten.

        Its folders are made by `start`, once the data has loaded (the command line makes `root` to lock it first).
        """
        root = Path(root)
        if root.exists() and (not root.is_dir() or any(path.name != LOCK_FILE for path in root.iterdir())):
            raise UserError(f"--out {root}: already exists and is not empty; choose another --out, "
                            f"or continue that run with --resume {root}")
        return cls(root)

    def start(self, config: TrainConfig) -> None:
        """Make the folders, write the resolved config and the metrics header of a fresh run."""
        try:
            for path in (self.root, self.samples, self.checkpoints):
                path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--out {self.root}: cannot create the run directory ({exc.strerror})") from None
        replace_file(self.root / "config.toml", lambda tmp: tmp.write_text(to_toml(config)))
        if self.job:
            replace_file(self.root / JOB_FILE, lambda tmp: tmp.write_text(self.job + "\n"))
        self._write_metrics([])

    def resume(self, config: TrainConfig, step: int) -> None:
        """Record the continued run's config; drop metric rows and sample grids written after the checkpoint."""
        replace_file(self.root / "config.toml", lambda tmp: tmp.write_text(to_toml(config)))
        with writing(self.samples):
            self.samples.mkdir(exist_ok=True)
        self.truncate_metrics(step)
        self.truncate_samples(step)

    def truncate_metrics(self, step: int) -> None:
        """Keep only rows up to `step`, so a resumed run appends without gaps or repeats."""
        with writing(self.metrics_csv):
            text = self.metrics_csv.read_text() if self.metrics_csv.exists() else ""
        complete = text[: text.rfind("\n") + 1]  # a row cut short by a kill has no newline yet
        kept = [row for row in csv.DictReader(io.StringIO(complete)) if _step_of_row(row) <= step]
        self._write_metrics(kept)

    def _write_metrics(self, rows: list[dict[str, str]]) -> None:
        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(METRIC_FIELDS)
                writer.writerows([row.get(name) or "" for name in METRIC_FIELDS] for row in rows)

        replace_file(self.metrics_csv, write)

    def truncate_samples(self, step: int) -> None:
        """Delete sample grids after `step` (and partial ones), so a resumed run redraws them once."""
        with writing(self.samples):
            for path in self.samples.glob("*.png"):
                if is_temporary(path) or step_of(path) > step:
                    path.unlink(missing_ok=True)

    def log_metrics(self, row: dict[str, float]) -> None:
        """Append one row to metrics.csv (missing columns are left empty)."""
        with writing(self.metrics_csv), open(self.metrics_csv, "a", newline="") as handle:
            csv.writer(handle).writerow([_format(row.get(name, math.nan)) for name in METRIC_FIELDS])

    def sample_path(self, step: int) -> Path:
        return self.samples / f"step_{step:07d}.png"

    def has_samples(self, step: int) -> bool:
        return self.sample_path(step).exists()

    @torch.no_grad()
    def save_samples(self, generator: torch.nn.Module, noise: torch.Tensor, step: int,
                     labels: torch.Tensor | None = None) -> None:
        """Write the grid of the fixed noise (and labels) at `step` (batch norm in inference mode)."""
        with eval_mode(generator):
            images = generator(noise, labels)
        replace_file(self.sample_path(step), lambda tmp: save_grid(images, tmp))

    def finish(self) -> None:
        """Write progress.gif and losses.png from what the run has so far."""
        replace_file(self.root / "progress.gif", lambda tmp: save_progress_gif(self.samples, tmp))
        if self.metrics_csv.exists() and read_metrics(self.metrics_csv):
            replace_file(self.root / "losses.png", lambda tmp: plot_losses(self.metrics_csv, tmp))


def _step_of_row(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or "nan")
    except ValueError:
        return math.nan


def _format(value: float) -> str:
    if not math.isfinite(value):
        return ""  # read back as NaN
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else f"{value:.6g}"
