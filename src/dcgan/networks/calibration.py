"""The fixed batch on which a generator's batch-norm statistics are measured.

A moving average of the generator's weights needs statistics of its own (the trained generator's
belong to other weights): training recomputes them on this batch, and loading a checkpoint written
before it did so recomputes them the same way.
"""

from __future__ import annotations

import torch
from torch import nn

from ..ops import recalibrate_batch_norm, seeded_noise

MAX_CALIBRATION_SAMPLES = 1024
CALIBRATION_PIXELS = MAX_CALIBRATION_SAMPLES * 28 * 28


def calibration_samples(image_size: int) -> int:
    """Images whose batch-norm statistics the moving average samples with: 1,024 up to 28x28, fewer when larger."""
    return min(MAX_CALIBRATION_SAMPLES, max(128, CALIBRATION_PIXELS // image_size**2))


def calibration_inputs(generator: nn.Module, num: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`num` fixed noise vectors and the labels the generator draws for them, as G's arguments."""
    device = next(generator.parameters()).device
    noise = seeded_noise(num, generator.latent_dim, 0).to(device)
    labels = generator.sample_labels(num, seed=0)  # None when unconditional
    return noise, None if labels is None else labels.to(device)


def recalibrate(generator: nn.Module, num: int) -> None:
    """Set the generator's batch-norm statistics to those of its own output on `num` fixed inputs."""
    recalibrate_batch_norm(generator, *calibration_inputs(generator, num))
