"""Turn a trained generator into pictures: PNG files, one grid, or a uint8 .npy array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .artifacts import grid_image, to_uint8
from .checkpoint import load_checkpoint
from .config import TrainConfig, config_from_dict
from .errors import UserError, reason
from .models import Generator
from .training import build_generator


def load_generator(path: str | Path, device: torch.device) -> tuple[Generator, TrainConfig]:
    """The generator of a checkpoint (in inference mode) and the config it was trained with."""
    payload = load_checkpoint(path)
    config = config_from_dict(payload["config"], str(path))
    generator = build_generator(config)
    try:
        generator.load_state_dict(payload["generator"])
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise UserError(f"{path}: checkpoint does not match this model's architecture ({reason(exc)})") from None
    return generator.to(device).eval(), config


@torch.no_grad()
def generate(generator: Generator, num: int, *, seed: int, device: torch.device, batch_size: int = 1000
             ) -> np.ndarray:
    """`num` samples as uint8 (N, H, W, C), 0 = background, from noise seeded by `seed`."""
    noise = torch.randn(num, generator.latent_dim, generator=torch.Generator().manual_seed(seed))
    chunks = [to_uint8(generator(noise[i:i + batch_size].to(device))) for i in range(0, num, batch_size)]
    return np.concatenate(chunks)


def write_images(images: np.ndarray, out: str | Path, *, fmt: str, grid: bool) -> Path:
    """Write samples as separate PNGs in a folder, one PNG grid, or an N x H x W (x C) .npy array."""
    out = Path(out)
    if grid:
        grid_image(images).save(out)
    elif fmt == "npy":
        np.save(out, images[..., 0] if images.shape[-1] == 1 else images)
    else:
        out.mkdir(parents=True, exist_ok=True)
        width = max(6, len(str(len(images) - 1)))
        for index, image in enumerate(images):
            Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(out / f"{index:0{width}d}.png")
    return out
