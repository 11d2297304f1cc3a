"""`--tensorboard`: a run directory that also writes its metrics rows and sample grids as TensorBoard events.

metrics.csv stays the record; the events in `RUN/tensorboard/` copy it: every row written there
gives its losses, images/s, augmentation readings and evaluation scores as scalars at the row's
step, and every progress grid written to `samples/` is an image at its step. Only rank 0 writes a
run, so only rank 0 holds one of these.

A run that goes back to an earlier step N (a resume from its last checkpoint, a roll-back after a
non-finite loss) drops its metrics rows after N, and here starts a new event file in the same
folder that begins with a restart at step N + 1: TensorBoard discards every event after N written
before it, and shows the steps trained again in their place.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..config import TrainConfig
from ..errors import UserError
from .rundir import ADA_FIELDS, EVAL_FIELDS, RunDirectory

FOLDER = "tensorboard"
MISSING_PACKAGE = "--tensorboard needs the tensorboard package: pip install 'dcgan[tensorboard]'"
# metrics.csv's columns written as scalars, by TensorBoard section; the step is the event's step.
SCALAR_TAGS = {
    **{name: f"train/{name}" for name in ("d_loss", "g_loss", "d_real", "d_fake", "images_per_s")},
    **{name: f"ada/{name}" for name in ADA_FIELDS},
    **{name: f"eval/{name}" for name in EVAL_FIELDS},
}
SAMPLES_TAG = "samples"


def summary_writer_class() -> type:
    """PyTorch's SummaryWriter, imported only when asked for; a UserError naming the install when it is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(MISSING_PACKAGE) from None
    return SummaryWriter


def require_tensorboard() -> None:
    """Refuse `--tensorboard` in one line, before anything is written, when TensorBoard is not installed."""
    summary_writer_class()


class TensorBoardRun(RunDirectory):
    """A run directory whose metrics rows and sample grids are also written as events in `RUN/tensorboard/`."""

    def __init__(self, root: str | Path, *, job: str = "") -> None:
        super().__init__(root, job=job)
        self.events = self.root / FOLDER
        self.writer: Any = None

    @classmethod
    def mirroring(cls, run: RunDirectory) -> TensorBoardRun:
        """The same run directory as `run`, with its TensorBoard copy."""
        return cls(run.root, job=run.job)

    def start(self, config: TrainConfig) -> None:
        """A fresh run: its event file is opened first, so a missing package stops the run before it writes."""
        self._open(purge_step=None)
        super().start(config)

    def truncate_metrics(self, step: int) -> None:
        """Drop metrics rows after `step` (a resume or a roll-back), and the events after it with them."""
        super().truncate_metrics(step)
        self._open(purge_step=step + 1)

    def log_metrics(self, row: dict[str, float]) -> None:
        """Append the row to metrics.csv, then its values as scalars at its step."""
        super().log_metrics(row)
        step = int(row["step"])
        for name, tag in SCALAR_TAGS.items():
            value = row.get(name, math.nan)
            if math.isfinite(value):  # metrics.csv leaves the cell empty
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    @torch.no_grad()
    def save_samples(self, generator: torch.nn.Module, noise: torch.Tensor, step: int,
                     labels: torch.Tensor | None = None) -> None:
        """Write the grid of `step` to samples/, then the same picture as an image at that step."""
        super().save_samples(generator, noise, step, labels=labels)
        with Image.open(self.sample_path(step)) as grid:  # greyscale (L) or colour (RGB)
            pixels = np.asarray(grid)
        self.writer.add_image(SAMPLES_TAG, pixels, step, dataformats="HW" if pixels.ndim == 2 else "HWC")
        self.writer.flush()

    def finish(self) -> None:
        """Write the run's GIF and plots, and close the event file."""
        super().finish()
        self.close()

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _open(self, *, purge_step: int | None) -> None:
        writer_class = summary_writer_class()
        self.close()
        try:
            self.writer = writer_class(str(self.events), purge_step=purge_step)
        except OSError as exc:
            raise UserError(f"--tensorboard: cannot write {self.events} ({exc.strerror})") from None
