"""GAN losses on discriminator logits (pre-sigmoid scores), as pure functions, and D's penalties.

Each discriminator loss takes the logits of a real batch and of a generated batch; each generator
loss takes the logits of a generated batch. `bce` is the tutorial's loss exactly. The penalties
are R1 and LeCam regularisation (whose anchors, `LeCam`, are the one state kept here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..config import LOSSES  # noqa: F401 - the names, kept with the other choices; the functions are here
from .distributed import World, mean_over_ranks

LECAM_DECAY = 0.99  # of the anchors' moving averages, as Tseng et al.


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


def lecam_penalty(real: torch.Tensor, fake: torch.Tensor, anchor_real: torch.Tensor, anchor_fake: torch.Tensor
                  ) -> torch.Tensor:
    """E[(D(x) − a_fake)²] + E[(D(G(z)) − a_real)²]: each logit pulled towards the other side's anchor."""
    return (real - anchor_fake).pow(2).mean() + (fake - anchor_real).pow(2).mean()


class LeCam:
    """LeCam regularisation of D (Tseng et al., 2021): `weight` · `lecam_penalty` with moving anchors.

    The anchors a_real, a_fake are moving averages (decay 0.99, from 0) of D's mean logits on real
    and generated images, updated with each D step's batch (its mean over the processes) before
    the penalty is taken. Keeping D's outputs near the anchors of the other side bounds how far
    apart it can push real and generated images: on small data sets D cannot run away by memorising.
    """

    def __init__(self, weight: float, *, device: torch.device, world: World = World()) -> None:
        self.weight = weight
        self.world = world
        self.anchors = torch.zeros(2, device=device)  # (a_real, a_fake)

    def __call__(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Update the anchors with logits `real` (B, 1) and `fake` (B, 1); the weighted penalty on them."""
        means = mean_over_ranks(self.world, torch.stack((real.detach().mean(), fake.detach().mean())))
        self.anchors = LECAM_DECAY * self.anchors + (1 - LECAM_DECAY) * means
        return self.weight * lecam_penalty(real, fake, self.anchors[0], self.anchors[1])

    def state_dict(self) -> dict[str, Any]:
        """The anchors, as a checkpoint stores them."""
        return {"anchors": self.anchors.clone()}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Undo `state_dict`; None (a checkpoint written without it) starts the anchors from 0."""
        anchors = torch.zeros(2) if state is None else state["anchors"]
        self.anchors = anchors.to(self.anchors.device, torch.float32).reshape(2)


_DISCRIMINATOR = {"bce": bce_discriminator, "hinge": hinge_discriminator, "lsgan": lsgan_discriminator}
_GENERATOR = {"bce": bce_generator, "hinge": hinge_generator, "lsgan": lsgan_generator}


def discriminator_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The discriminator loss called `name` (one of LOSSES)."""
    return _DISCRIMINATOR[name]


def generator_loss(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The generator loss called `name` (one of LOSSES)."""
    return _GENERATOR[name]
