"""Turn a trained generator into pictures: PNG files, one grid, or a uint8 .npy array; truncation (noise
drawn closer to the latent's centre); and the checks on what a user asks of one (labels, seeds,
truncation, sizes), shared by the command line, the API and the demo."""

from __future__ import annotations

import math
import numbers
import re
import reprlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from .checkpoint import load_checkpoint
from .config import TrainConfig, config_from_dict
from .errors import UserError, reason
from .files import atomic_write
from .images import grid_image, to_uint8
from .limits import require_fits
from .networks import build_generator
from .networks.calibration import calibration_samples, recalibrate
from .ops import seeded_noise

MAX_SEED = 2**64 - 1  # the seeds torch.Generator.manual_seed takes: 0 to 2**64 - 1


def load_generator(path: str | Path, device: torch.device) -> tuple[nn.Module, TrainConfig]:
    """The generator of a checkpoint (its moving average when it has one, in inference mode) and its config."""
    named = Path(path)
    if named.exists() and not (named.is_file() or named.is_dir()):  # reading a pipe or /dev/zero never ends
        raise UserError(f"{path}: not a checkpoint file or a run directory (a device, pipe or socket)")
    payload = load_checkpoint(path)
    config = config_from_dict(payload["config"], str(path))
    generator = build_generator(config)
    ema = payload.get("ema")
    weights = ema["module"] if isinstance(ema, dict) and "module" in ema else payload["generator"]
    try:
        generator.load_state_dict(weights)
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise UserError(f"{path}: checkpoint does not match this model's architecture ({reason(exc)})") from None
    generator = generator.to(device).eval()
    if weights is not payload["generator"] and not ema.get("own_statistics", False):
        # written before the average kept batch-norm statistics of its own: recompute them as training does
        recalibrate(generator, calibration_samples(config.image_size))
    return generator, config


def is_integer(value: Any) -> bool:
    """Whether `value` is a whole number of an integer type (Python or numpy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_seed(seed: Any, *, option: str) -> int:
    """`seed` as an int when torch.Generator takes it (0 to 2**64 - 1); a UserError naming `option` otherwise."""
    if not is_integer(seed) or not 0 <= seed <= MAX_SEED:
        raise UserError(f"{option}: must be an integer from 0 to 2**64 - 1, got {reprlib.repr(seed)}")
    return int(seed)


def check_truncation(truncation: Any, *, option: str) -> float:
    """`truncation` as a float when it is a number in (0, 1]; a UserError naming `option` otherwise."""
    if isinstance(truncation, bool) or not isinstance(truncation, numbers.Real) or not 0 < truncation <= 1:
        raise UserError(f"{option}: must be a number greater than 0 and at most 1 (1: no truncation), "
                        f"got {reprlib.repr(truncation)}")
    return float(truncation)


class TruncatedGenerator(nn.Module):
    """A generator that draws closer to its latent's centre: G(psi * z) for each noise vector z it is given.

    The generators here have no mapping network (StyleGAN truncates its intermediate latent towards
    that latent's mean), so truncation scales the Gaussian noise itself: z ~ N(0, psi² I), samples
    of higher fidelity and less variety as psi goes from 1 towards 0. Walks scale their whole path
    (slerp is linear in its end points, so a walk between scaled anchors is the scaled walk). It has
    the generator interface of networks/ (and `morph` where the generator has it).
    """

    def __init__(self, generator: nn.Module, truncation: float) -> None:
        super().__init__()
        self.generator = generator
        self.truncation = truncation
        self.latent_dim: int = generator.latent_dim
        self.num_classes: int = generator.num_classes
        self.takes_labels: bool = generator.takes_labels
        self.label_classes: int | None = generator.label_classes
        self.conditioning: str = generator.conditioning

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images (N, C, H, W) of noise `z` (N, latent_dim) scaled by the truncation, and `labels` (N,) or None."""
        return self.generator(z * self.truncation, labels)

    def morph(self, z: torch.Tensor, start: torch.Tensor, end: torch.Tensor, t: float) -> torch.Tensor:
        """The generator's class morph at noise `z` scaled by the truncation."""
        return self.generator.morph(z * self.truncation, start, end, t)

    def sample_labels(self, num: int, *, seed: int) -> torch.Tensor | None:
        """The labels the generator draws when none are named (truncation leaves them as they are)."""
        return self.generator.sample_labels(num, seed=seed)


def truncated(generator: nn.Module, truncation: float) -> nn.Module:
    """`generator` with its noise scaled by `truncation` (0 < psi <= 1); itself, unchanged, at 1 (no truncation)."""
    return generator if truncation == 1 else TruncatedGenerator(generator, truncation)


def require_label_classes(generator: nn.Module, *, option: str, source: str | Path) -> int:
    """The number of classes a user may ask `generator` for; a UserError naming `option` when it takes none."""
    if generator.label_classes is None:
        # a generator that takes labels but no classes from the user draws its k-means clusters itself
        kind = "trained on k-means clusters, not classes" if generator.takes_labels else "an unconditional model"
        raise UserError(f"{option}: {source} takes no class labels ({kind}); train a class-conditional model "
                        f"with --conditional (or --preset conditional)")
    return generator.label_classes


def check_classes(lowest: int, highest: int, num_classes: int, *, option: str) -> None:
    """Refuse classes outside 0 to num_classes - 1 (the lowest and highest asked for), naming `option`."""
    for value in (lowest, highest):
        if not 0 <= value < num_classes:
            raise UserError(f"{option}: class {value} is out of range; this model has classes 0-{num_classes - 1}")


def parse_labels(text: str, num_classes: int, *, flag: str = "--labels") -> list[int]:
    """Classes named on the command line: `7`, `0-9` or `1,3,5` (ranges and lists may mix: `0-2,7`).

    Each range is checked against the model's classes before it is expanded.
    """
    classes: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise UserError(f"{flag} {text!r}: expected class numbers such as 7, 0-9 or 1,3,5")
        first, last = int(match[1]), int(match[2] if match[2] is not None else match[1])
        if first > last:
            raise UserError(f"{flag} {text!r}: the range {first}-{last} is empty")
        check_classes(first, last, num_classes, option=f"{flag} {text!r}")
        classes.extend(range(first, last + 1))
    return list(dict.fromkeys(classes))


def user_labels(generator: nn.Module, labels: Any, num: int, *, option: str = "labels",
                source: str | Path = "this generator") -> torch.Tensor | None:
    """Labels given in Python (one class, or one per image: int, sequence, numpy array or tensor) as an
    int64 tensor of `num` classes, checked against `generator`; None when none are given."""
    if labels is None:
        return None
    num_classes = require_label_classes(generator, option=option, source=source)
    wrong = UserError(f"{option}: must be one class or {num} integer classes, got {reprlib.repr(labels)}")
    try:
        values = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    except (TypeError, ValueError):  # ragged nested sequences
        raise wrong from None
    integers = values.dtype.kind in "iu" or (values.dtype == object and all(map(is_integer, values.flat)))
    if not integers or values.ndim > 1 or (values.ndim == 1 and len(values) != num):
        raise wrong
    check_classes(int(values.min()), int(values.max()), num_classes, option=option)
    return torch.from_numpy(np.broadcast_to(values.astype(np.int64), (num,)).copy())


def class_labels(generator: nn.Module, num: int, *, seed: int) -> torch.Tensor | None:
    """The classes a class-conditional generator is asked for when it is scored: every class in turn
    (None for other generators, which are not asked for classes)."""
    return None if generator.label_classes is None else generator.sample_labels(num, seed=seed)


def labels_per_class(classes: list[int], per_class: int) -> torch.Tensor:
    """`per_class` samples of each class in `classes`, grouped by class (one grid row each)."""
    return torch.tensor(classes).repeat_interleave(per_class)


def require_images_fit(what: str, count: int, *, latent_dim: int, image_size: int, channels: int,
                       copies: int = 3) -> None:
    """Refuse `count` images that would not fit in memory: their noise and `copies` uint8 copies of each
    (padded as in a grid: generated, gathered, written); `what` names the options at fault."""
    require_fits(what, count, 4 * latent_dim + 8 + copies * (image_size + 2) ** 2 * channels)


@torch.no_grad()
def generate(generator: nn.Module, num: int, *, seed: int, device: torch.device, batch_size: int = 1000,
             labels: torch.Tensor | None = None) -> np.ndarray:
    """`num` samples as uint8 (N, H, W, C), 0 = background, from noise seeded by `seed` (and `labels`, (N,)).

    Without `labels`, the generator draws its own (networks/: every class in turn, or clusters by
    their sizes, also from `seed`); only a class-conditional generator takes `labels`.
    """
    if labels is not None:
        require_label_classes(generator, option="labels", source="this generator")
    noise = seeded_noise(num, generator.latent_dim, seed)
    if labels is None:
        labels = generator.sample_labels(num, seed=seed)
    chunks = []
    for i in range(0, num, batch_size):
        batch_labels = None if labels is None else labels[i:i + batch_size].to(device)
        chunks.append(to_uint8(generator(noise[i:i + batch_size].to(device), batch_labels)))
    return np.concatenate(chunks)


def write_images(images: np.ndarray, out: str | Path, *, fmt: str, grid: bool,
                 labels: np.ndarray | None = None) -> Path:
    """Write samples as separate PNGs, one PNG grid, or an N x H x W (x C) .npy array.

    With `labels`, PNGs go into one subfolder per class, the grid has one class per row, and the
    .npy file gets a companion `<name>.labels.npy` of the classes asked for. The grid and the .npy
    files are written under exactly the name given (atomically: whole or not at all).
    """
    out = Path(out)
    if grid:
        columns = None if labels is None else math.ceil(len(images) / len(np.unique(labels)))
        atomic_write(out, grid_image(images, columns=columns).save)  # the format follows the suffix
    elif fmt == "npy":
        save_npy(out, images[..., 0] if images.shape[-1] == 1 else images)
        if labels is not None:
            save_npy(labels_path(out), labels.astype(np.int64))
    else:
        width = max(6, len(str(len(images) - 1)))
        for index, image in enumerate(images):
            folder = out if labels is None else out / str(int(labels[index]))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(folder / f"{index:0{width}d}.png")
    return out


def save_npy(path: Path, array: np.ndarray) -> None:
    """`array` as a .npy file at exactly `path` (numpy's own np.save(name) would add `.npy` to other names)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, array)

    atomic_write(path, write)


def labels_path(npy: Path) -> Path:
    """Where the labels of a conditional `.npy` sample file go: `s.npy` -> `s.labels.npy`."""
    return npy.with_name(npy.stem + ".labels.npy")
