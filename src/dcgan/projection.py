"""Projection of a real picture into a trained generator's latent space: the noise (and, for a labelled
model, the class) whose image is closest to the picture, found by gradient descent on the noise.

The distance is the pixel mean squared error (images in [-1, 1]) plus a perceptual term: one minus
the cosine similarity of the two images' features in a network the checkpoint brings (its
discriminator's features) or, without one, the bundled feature network when the picture fits it.
The noise stays on the sphere of radius sqrt(latent_dim), where Gaussian noise lies and G was
trained. Several random starts run at once and the best at the end is the projection; a labelled
model with no class named screens every class first (at least `starts` starts in all and one for
each class, for a tenth of the steps), then the best `starts` of them go on.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from .checkpoint import load_checkpoint
from .config import MAX_PROJECTION_STEPS, config_from_dict
from .data import decode_picture
from .errors import UserError, file_kind, path_mode, reason
from .evaluation.classifier import load_classifier
from .files import fsync_directory, temporary_path
from .images import grid_image, to_uint8
from .networks import build_discriminator, channels_of
from .sampling import check_classes, is_integer, require_label_classes

STARTS = 4  # random starts that run to the end
SCREEN_SHARE = 10  # with several classes to try: 1/SCREEN_SHARE of the steps screen them all
LEARNING_RATE = 0.1  # Adam's on the noise, whose entries are of order 1; cosine-annealed to 0
PERCEPTUAL_WEIGHT = 1.0  # the perceptual term's weight beside the pixel error in the distance
# Image values (starts x channels x pixels) of one forward and backward pass; more starts are taken in parts.
CHUNK_VALUES = 2**20
DISPLAY_PIXELS = 128  # the side by side picture and the GIF enlarge small images towards this size
PROGRESS_FRAMES = 30  # images of the optimisation in progress.gif, besides the last
LATENT_FILE, LABEL_FILE, RECORD_FILE = "latent.npy", "label.txt", "projection.json"


@dataclass(frozen=True)
class Projection:
    """A picture's projection: the latent, its class (None for an unconditional model), the generator's
    image of them (uint8, H x W or H x W x C as `sample` gives) and its distance to the picture."""

    latent: np.ndarray  # (latent_dim,) float32, on the sphere of radius sqrt(latent_dim)
    label: int | None
    reconstruction: np.ndarray
    distance: float  # pixel_error + PERCEPTUAL_WEIGHT * perceptual_error
    pixel_error: float  # mean squared error, images in [-1, 1]
    perceptual_error: float  # 1 - cosine similarity of the features (0 without a perceptual network)


@dataclass(frozen=True)
class PerceptualNetwork:
    """Features of images in [-1, 1], (B, C, H, W) -> (B, F), from a frozen network named `name`."""

    name: str  # "discriminator" or "classifier"
    features: Callable[[torch.Tensor], torch.Tensor]


def perceptual_network(checkpoint: str | Path, device: torch.device) -> PerceptualNetwork | None:
    """The checkpoint's discriminator's features; without a discriminator, the bundled feature network
    when the checkpoint's pictures fit it; None when neither is at hand (the distance is then the pixels')."""
    payload = load_checkpoint(checkpoint)
    config = config_from_dict(payload["config"], str(checkpoint))
    weights = payload.get("discriminator")
    if isinstance(weights, dict):
        discriminator = build_discriminator(config)
        try:
            discriminator.load_state_dict(weights)
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as exc:
            raise UserError(f"{checkpoint}: checkpoint's discriminator does not match this model's architecture "
                            f"({reason(exc)})") from None
        discriminator = discriminator.to(device).eval().requires_grad_(False)
        return PerceptualNetwork("discriminator", discriminator.features)
    classifier = load_classifier(None, device=device)
    if classifier.info.input_shape != (channels_of(config), config.image_size, config.image_size):
        return None
    model = classifier.model.requires_grad_(False)
    return PerceptualNetwork("classifier", lambda images: model.features((images + 1) / 2))


def read_picture(path: str | os.PathLike, *, channels: int, image_size: int, option: str) -> torch.Tensor:
    """A picture file read as training pictures are (laid on white if transparent, converted to `channels`,
    its shorter side resized to `image_size`, centre-cropped): uint8 (C, S, S); a UserError naming `option`."""
    mode = path_mode(path, f"{option} {path}")
    if not stat.S_ISREG(mode):
        raise UserError(f"{option} {path}: {file_kind(mode)}, not a picture file")
    return torch.tensor(decode_picture(Path(path), channels, image_size))


def picture_from_array(array: Any, *, channels: int, image_size: int, option: str) -> torch.Tensor:
    """A uint8 array (H, W) or (H, W, C) with C 1, 3 or 4, read as a picture file is: uint8 (C, S, S)."""
    if (not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim not in (2, 3)
            or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)) or 0 in array.shape):
        described = (f"a {array.dtype} array of shape {array.shape}" if isinstance(array, np.ndarray)
                     else type(array).__name__)
        raise UserError(f"{option}: must be a picture file (str or Path) or a uint8 array (H, W) or (H, W, C) with "
                        f"C 1, 3 or 4, got {described}")
    encoded = io.BytesIO()
    Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array).save(encoded, "PNG")
    encoded.seek(0)
    return torch.tensor(decode_picture(encoded, channels, image_size))


def classes_to_try(generator: nn.Module, label: int | None, *, option: str, source: str | Path) -> list[int] | None:
    """The classes a projection tries: `label` alone (checked against the model's classes), else every class
    (or cluster) of a labelled model; None for a generator that takes no labels."""
    if label is not None:
        check_classes(label, label, require_label_classes(generator, option=option, source=source), option=option)
        return [label]
    return list(range(generator.num_classes)) if generator.takes_labels else None


def check_steps(steps: Any, *, option: str) -> int:
    """`steps` as an int from 1 to MAX_PROJECTION_STEPS; a UserError naming `option` otherwise."""
    if not is_integer(steps) or not 1 <= steps <= MAX_PROJECTION_STEPS:
        raise UserError(f"{option}: must be an integer from 1 to {MAX_PROJECTION_STEPS:,}, got {steps!r}")
    return int(steps)


def on_sphere(z: torch.Tensor) -> torch.Tensor:
    """Each row of `z` scaled to the norm sqrt(latent_dim), the typical norm of Gaussian noise."""
    return z * (math.sqrt(z.shape[1]) / z.norm(dim=1, keepdim=True).clamp_min(1e-12))


def distances(images: torch.Tensor, target: torch.Tensor, network: PerceptualNetwork | None,
              target_features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel mean squared errors and perceptual errors (B,) of images (B, C, H, W) to `target` (1, C, H, W),
    both in [-1, 1]; the perceptual errors are 0 without a network."""
    pixel = (images - target).pow(2).flatten(1).mean(1)
    if network is None:
        return pixel, torch.zeros_like(pixel)
    if target_features is None:
        target_features = network.features(target).flatten(1)
    similarity = F.cosine_similarity(network.features(images).flatten(1), target_features, dim=1)
    return pixel, 1 - similarity


def project(generator: nn.Module, picture: torch.Tensor, *, classes: Sequence[int] | None, steps: int, seed: int,
            network: PerceptualNetwork | None, device: torch.device, starts: int = STARTS, progress: bool = False,
            on_frame: Callable[[np.ndarray], None] | None = None) -> Projection:
    """The latent (and class, of `classes`) whose image is closest to `picture`, uint8 (C, S, S).

    `steps` of Adam on `starts` random starts (from `seed`), spread over `classes` (at least one
    each, the best `starts` going on after the screening steps); `on_frame` is given the best
    start's image (uint8 (S, S, C)) PROGRESS_FRAMES times along the way and at the end.
    Batch-norm layers stay in inference mode, so the starts do not affect one another.
    """
    target = picture.to(device).float().div(127.5).sub(1).unsqueeze(0)
    with torch.no_grad():
        target_features = None if network is None else network.features(target).flatten(1)
    per_class = -(-starts // len(classes or [None]))
    labels = None if classes is None else torch.tensor(list(classes)).repeat_interleave(per_class).to(device)
    rng = torch.Generator().manual_seed(seed)
    z = on_sphere(torch.randn(per_class * len(classes or [None]), generator.latent_dim, generator=rng)).to(device)
    chunk = max(1, CHUNK_VALUES // picture.numel())
    screen = steps // SCREEN_SHARE if len(z) > starts else 0
    frame_every = max(1, steps // PROGRESS_FRAMES)

    def distance_of(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pixel, perceptual = distances(generator(z[rows], None if labels is None else labels[rows]), target,
                                      network, target_features)
        return pixel + PERCEPTUAL_WEIGHT * perceptual, pixel, perceptual

    def image_of(row: int) -> np.ndarray:
        with torch.no_grad():
            return to_uint8(generator(z[row:row + 1], None if labels is None else labels[row:row + 1]))[0]

    z.requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=LEARNING_RATE)
    current = torch.zeros(len(z), device=device)
    bar = tqdm(range(steps), desc="projecting", unit="step", leave=False, disable=not progress)
    for step in bar:
        if step and step == screen:  # go on with the best starts only
            keep = current.argsort()[:starts]
            z = z.detach()[keep].requires_grad_(True)
            labels = None if labels is None else labels[keep]
            current = current[keep]
            optimiser = torch.optim.Adam([z], lr=LEARNING_RATE)
        if on_frame is not None and step % frame_every == 0:
            on_frame(image_of(int(current.argmin())))
        for group in optimiser.param_groups:
            group["lr"] = LEARNING_RATE * 0.5 * (1 + math.cos(math.pi * step / steps))
        optimiser.zero_grad(set_to_none=True)
        parts = []
        for rows in torch.arange(len(z), device=device).split(chunk):
            distance = distance_of(rows)[0]
            distance.sum().backward()
            parts.append(distance.detach())
        current = torch.cat(parts)
        optimiser.step()
        with torch.no_grad():
            z.copy_(on_sphere(z))
        bar.set_postfix(distance=f"{float(current.min()):.4f}", refresh=False)
    with torch.no_grad():
        final = [torch.stack(distance_of(rows)) for rows in torch.arange(len(z), device=device).split(chunk)]
    distance, pixel, perceptual = torch.cat(final, dim=1)
    best = int(distance.argmin())
    reconstruction = image_of(best)
    if on_frame is not None:
        on_frame(reconstruction)
    return Projection(latent=z[best].detach().float().cpu().numpy(),
                      label=None if labels is None else int(labels[best]),
                      reconstruction=reconstruction[..., 0] if reconstruction.shape[-1] == 1 else reconstruction,
                      distance=float(distance[best]), pixel_error=float(pixel[best]),
                      perceptual_error=float(perceptual[best]))


def record_of(projection: Projection, *, checkpoint: str | Path, image: str | Path, steps: int, seed: int,
              network: PerceptualNetwork | None) -> dict[str, Any]:
    """What `projection.json` says of a projection: its distance and how it was found."""
    return {"checkpoint": str(checkpoint), "image": str(image), "distance": projection.distance,
            "pixel_error": projection.pixel_error, "perceptual_error": projection.perceptual_error,
            "perceptual_network": None if network is None else network.name, "perceptual_weight": PERCEPTUAL_WEIGHT,
            "label": projection.label, "latent_dim": int(projection.latent.shape[0]), "steps": steps,
            "starts": STARTS, "seed": seed}


def display_scale(image_size: int) -> int:
    """How many times small pictures are enlarged (nearest neighbour) to be seen: towards DISPLAY_PIXELS."""
    return max(1, DISPLAY_PIXELS // image_size)


def side_by_side(picture: np.ndarray, reconstruction: np.ndarray, scale: int) -> Image.Image:
    """uint8 (S, S, C) original | reconstruction, enlarged `scale` times; "L" for grey, else "RGB"."""
    pair = grid_image(np.stack([picture, reconstruction.reshape(picture.shape)]), columns=2)
    return pair.resize((pair.width * scale, pair.height * scale), Image.Resampling.NEAREST)


def save_projection(out: Path, projection: Projection, picture: torch.Tensor, frames: Sequence[np.ndarray],
                    record: dict[str, Any]) -> None:
    """Write the projection's files into folder `out` (new or empty), whole or not at all: they are written
    into a hidden folder beside it, which is then renamed to `out`."""
    original = picture.permute(1, 2, 0).numpy()
    scale = display_scale(original.shape[0])
    staging = temporary_path(out)
    try:
        staging.mkdir()
        with open(staging / LATENT_FILE, "wb") as handle:
            np.save(handle, projection.latent.astype(np.float32))
        if projection.label is not None:
            (staging / LABEL_FILE).write_text(f"{projection.label}\n")
        Image.fromarray(projection.reconstruction).save(staging / "reconstruction.png")
        side_by_side(original, projection.reconstruction, scale).save(staging / "side_by_side.png")
        pictures = [side_by_side(original, frame, scale) for frame in frames]
        durations = [100] * (len(pictures) - 1) + [1500]  # linger on the result
        pictures[0].save(staging / "progress.gif", save_all=True, append_images=pictures[1:], duration=durations,
                         loop=0)
        (staging / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
        for file in staging.iterdir():
            with open(file, "rb+") as handle:
                os.fsync(handle.fileno())
        fsync_directory(staging)
        os.replace(staging, out)  # onto a missing or empty folder
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_directory(out.parent)


def read_latent(path: str | os.PathLike, latent_dim: int, *, option: str) -> torch.Tensor:
    """A latent file as `dcgan project` writes it: a .npy of `latent_dim` finite floats; a UserError naming
    `option` and the file otherwise."""
    what = f"{option} {path}"
    mode = path_mode(path, what)
    if not stat.S_ISREG(mode):
        raise UserError(f"{what}: {file_kind(mode)}, not a .npy file")
    try:
        with open(path, "rb") as handle:
            np.lib.format.read_magic(handle)
            handle.seek(0)
            array = np.lib.format.read_array(handle, allow_pickle=False)
    except OSError as exc:
        raise UserError(f"{what}: cannot read ({exc.strerror or exc})") from None
    except (ValueError, EOFError) as exc:
        raise UserError(f"{what}: not a readable .npy array ({reason(exc)})") from None
    if array.dtype.kind != "f":
        raise UserError(f"{what}: must hold floating-point numbers (float32), got {array.dtype}")
    if array.ndim != 1:
        raise UserError(f"{what}: must be one latent of shape ({latent_dim},), got shape {array.shape}")
    if array.shape[0] != latent_dim:
        raise UserError(f"{what}: a latent of {array.shape[0]} numbers, but the checkpoint's generator takes "
                        f"{latent_dim}")
    if not np.isfinite(array).all():
        raise UserError(f"{what}: holds NaN or inf")
    return torch.from_numpy(array.astype(np.float32))


def read_latent_label(path: str | os.PathLike, generator: nn.Module, *, option: str) -> int | None:
    """The class of a latent file, from the `label.txt` beside it, for a generator that takes labels
    (None for others); a UserError naming `option` and the file when it is missing or out of range."""
    if not generator.takes_labels:
        return None
    label_file = Path(path).with_name(LABEL_FILE)
    if not label_file.is_file():
        raise UserError(f"{option} {path}: the checkpoint's generator needs the latent's class, and there is no "
                        f"{LABEL_FILE} beside it (dcgan project writes one)")
    try:
        with open(label_file, "rb") as handle:
            text = handle.read(100).decode("utf-8", errors="replace")
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot read {label_file} ({exc.strerror or exc})") from None
    match = re.fullmatch(r"\s*(\d+)\s*", text)
    if match is None or int(match[1]) >= generator.num_classes:
        raise UserError(f"{label_file}: must hold one class from 0 to {generator.num_classes - 1}, got {text!r}")
    return int(match[1])
