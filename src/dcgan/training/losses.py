"""GAN losses on discriminator logits (pre-sigmoid scores), as pure functions.

Each discriminator loss takes the logits of a real batch and of a generated batch; each generator
loss takes the logits of a generated batch. `bce` is the tutorial's loss exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..config import LOSSES  # noqa: F401 - the names, kept with the other choices; the functions are here


def bce_discriminator(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """L_D = ½ [BCE(D(x), 1) + BCE(D(G(z)), 0)] = ½ [softplus(-r) + softplus(f)], batch means."""
    loss_real = F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
    loss_fake = F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
    return 0.5 * (loss_real + loss_fake)


def bce_generator(fake: torch.Tensor) -> torch.Tensor:
    """L_G = BCE(D(G(z)), 1) = -log σ(f): the non-saturating generator loss of the tutorial."""
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def hinge_discriminator(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """L_D = mean(max(0, 1 - r)) + mean(max(0, 1 + f))."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_generator(fake: torch.Tensor) -> torch.Tensor:
    """L_G = -mean(f)."""
    return -fake.mean()


def lsgan_discriminator(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """L_D = ½ [mean((r - 1)²) + mean(f²)] (least squares, targets 1 for real and 0 for generated)."""
    return 0.5 * ((real - 1.0).pow(2).mean() + fake.pow(2).mean())


def lsgan_generator(fake: torch.Tensor) -> torch.Tensor:
    """L_G = ½ mean((f - 1)²)."""
    return 0.5 * (fake - 1.0).pow(2).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """E |∇ₓ D(x)|² over the real batch `real` (which must require grad), differentiable for D's step."""
    (gradient,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)  # (B, C, H, W)
    return gradient.float().pow(2).flatten(1).sum(1).mean()


_DISCRIMINATOR = {"bce": bce_discriminator, "hinge": hinge_discriminator, "lsgan": lsgan_discriminator}
_GENERATOR = {"bce": bce_generator, "hinge": hinge_generator, "lsgan": lsgan_generator}


def discriminator_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The discriminator loss called `name` (one of LOSSES)."""
    return _DISCRIMINATOR[name]


def generator_loss(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The generator loss called `name` (one of LOSSES)."""
    return _GENERATOR[name]
