"""Pictures a person opens: generator output as uint8 images, PNG grids and the progress animation."""

from __future__ import annotations

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
    images = [_frame(path) for path in frames]
    durations = [frame_ms] * (len(images) - 1) + [frame_ms * 5]  # linger on the final grid
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return len(images)


def _frame(path: Path) -> Image.Image:
    """A grid as a GIF frame: greyscale stays greyscale, colour stays colour (GIF gives each frame a palette)."""
    with Image.open(path) as image:
        return image.convert("L" if image.mode in ("1", "L", "I", "I;16", "F") else "RGB")
