"""Turn a trained generator into pictures: PNG files, one grid, or a uint8 .npy array."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from torch import nn

from .checkpoint import load_checkpoint
from .config import TrainConfig, config_from_dict
from .errors import UserError, reason
from .images import grid_image, to_uint8
from .networks import build_generator
from .networks.calibration import calibration_samples, recalibrate
from .ops import seeded_noise


def load_generator(path: str | Path, device: torch.device) -> tuple[nn.Module, TrainConfig]:
    """The generator of a checkpoint (its moving average when it has one, in inference mode) and its config."""
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


def parse_labels(text: str, num_classes: int, *, flag: str = "--labels") -> list[int]:
    """Classes named on the command line: `7`, `0-9` or `1,3,5` (ranges and lists may mix: `0-2,7`)."""
    classes: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise UserError(f"{flag} {text!r}: expected class numbers such as 7, 0-9 or 1,3,5")
        first, last = int(match[1]), int(match[2] if match[2] is not None else match[1])
        if first > last:
            raise UserError(f"{flag} {text!r}: the range {first}-{last} is empty")
        classes.extend(range(first, last + 1))
    out_of_range = [c for c in classes if c >= num_classes]
    if out_of_range:
        raise UserError(f"{flag} {text!r}: class {out_of_range[0]} is out of range; this model has classes "
                        f"0-{num_classes - 1}")
    return list(dict.fromkeys(classes))


def class_labels(generator: nn.Module, num: int, *, seed: int) -> torch.Tensor | None:
    """The classes a class-conditional generator is asked for when it is scored: every class in turn
    (None for other generators, which are not asked for classes)."""
    return generator.sample_labels(num, seed=seed) if generator.conditioning == "classes" else None


def labels_per_class(classes: list[int], per_class: int) -> torch.Tensor:
    """`per_class` samples of each class in `classes`, grouped by class (one grid row each)."""
    return torch.tensor(classes).repeat_interleave(per_class)


NOT_CLASSES = {"none": "an unconditional model", "clusters": "trained on k-means clusters, not classes"}


@torch.no_grad()
def generate(generator: nn.Module, num: int, *, seed: int, device: torch.device, batch_size: int = 1000,
             labels: torch.Tensor | None = None) -> np.ndarray:
    """`num` samples as uint8 (N, H, W, C), 0 = background, from noise seeded by `seed` (and `labels`, (N,)).

    Without `labels`, the generator draws its own (networks/: every class in turn, or clusters by
    their sizes, also from `seed`); only a class-conditional generator takes `labels`.
    """
    noise = seeded_noise(num, generator.latent_dim, seed)
    if labels is None:
        labels = generator.sample_labels(num, seed=seed)
    elif generator.conditioning != "classes":
        raise UserError(f"--label/--labels need a conditional model; this one is {NOT_CLASSES[generator.conditioning]}")
    chunks = []
    for i in range(0, num, batch_size):
        batch_labels = None if labels is None else labels[i:i + batch_size].to(device)
        chunks.append(to_uint8(generator(noise[i:i + batch_size].to(device), batch_labels)))
    return np.concatenate(chunks)


def write_images(images: np.ndarray, out: str | Path, *, fmt: str, grid: bool,
                 labels: np.ndarray | None = None) -> Path:
    """Write samples as separate PNGs, one PNG grid, or an N x H x W (x C) .npy array.

    With `labels`, PNGs go into one subfolder per class, the grid has one class per row, and the
    .npy file gets a companion `<name>.labels.npy` of the classes asked for.
    """
    out = Path(out)
    if grid:
        columns = None if labels is None else math.ceil(len(images) / len(np.unique(labels)))
        grid_image(images, columns=columns).save(out)
    elif fmt == "npy":
        np.save(out, images[..., 0] if images.shape[-1] == 1 else images)
        if labels is not None:
            np.save(labels_path(out), labels.astype(np.int64))
    else:
        width = max(6, len(str(len(images) - 1)))
        for index, image in enumerate(images):
            folder = out if labels is None else out / str(int(labels[index]))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(folder / f"{index:0{width}d}.png")
    return out


def labels_path(npy: Path) -> Path:
    """Where the labels of a conditional `.npy` sample file go: `s.npy` -> `s.labels.npy`."""
    return npy.with_name(npy.name.removesuffix(".npy") + ".labels.npy")
