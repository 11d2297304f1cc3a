"""The two networks with their optimisers (`GAN`), and one training step (`TrainingStep`): D steps then a G step."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ContextManager

import torch
from torch import nn

from ..config import TrainConfig
from ..device import autocast_for, resolve_convolutions, resolve_memory_format
from ..networks import build_discriminator, build_generator
from ..networks.calibration import MAX_CALIBRATION_SAMPLES, calibration_samples, recalibrate
from ..networks.matmul_conv import use_matmul
from .augment import AdaptiveAugment, diff_augment
from .distributed import World, broadcast_buffers, parallel
from .ema import EMA
from .losses import LeCam, discriminator_loss, generator_loss, r1_penalty

LR_REFERENCE_BATCH = 32  # the tutorial's batch size, which its learning rates were tuned for


@dataclass
class GAN:
    """The two networks, their optimisers, the generator's moving average (if any), and the state
    that D's training carries from step to step: adaptive augmentation's probability (`ada`) and
    LeCam regularisation's anchors (`lecam`), when the recipe has them."""

    generator: nn.Module
    discriminator: nn.Module
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam
    ema: EMA | None = None
    calibration_samples: int = MAX_CALIBRATION_SAMPLES
    ada: AdaptiveAugment | None = None
    lecam: LeCam | None = None
    memory_format: torch.memory_format = torch.contiguous_format  # the networks', which their batches take

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser states and D's running state, as a checkpoint stores them."""
        state = {"generator": self.generator.state_dict(), "discriminator": self.discriminator.state_dict(),
                 "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}
        if self.ema is not None:
            self.sampler()  # the average's batch-norm statistics, brought up to date
            state["ema"] = self.ema.state_dict()
        if self.ada is not None:
            state["ada"] = self.ada.state_dict()
        if self.lecam is not None:
            state["lecam"] = self.lecam.state_dict()
        return state

    def load_state_dict(self, payload: dict[str, Any]) -> None:
        """Undo `state_dict` (D's running state starts afresh when the payload has none)."""
        self.generator.load_state_dict(payload["generator"])
        self.discriminator.load_state_dict(payload["discriminator"])
        self.opt_g.load_state_dict(payload["opt_g"])
        self.opt_d.load_state_dict(payload["opt_d"])
        if self.ema is not None:
            self.ema.load_state_dict(payload["ema"])
        if self.ada is not None:
            self.ada.load_state_dict(payload.get("ada"))
        if self.lecam is not None:
            self.lecam.load_state_dict(payload.get("lecam"))

    def sampler(self) -> nn.Module:
        """The generator that samples are drawn from: the moving average when there is one.

        The average's batch-norm statistics are those of its own output, recomputed when stale on
        fixed noise (the training run's random state is not touched): with the statistics of the
        trained weights it makes worse images (docs/quality.md).
        """
        if self.ema is None:
            return self.generator
        if self.ema.stale:
            recalibrate(self.ema.module, self.calibration_samples)
            self.ema.stale = False
        return self.ema.module

    def set_lr_scale(self, config: TrainConfig, scale: float) -> None:
        """Set both optimisers' learning rates to the config's (after the large-batch rule) times `scale`."""
        lr_g, lr_d = learning_rates(config)
        for optimiser, lr in ((self.opt_g, lr_g), (self.opt_d, lr_d)):
            for group in optimiser.param_groups:
                group["lr"] = lr * scale

    def finite_weights(self) -> bool:
        """Whether every floating-point parameter and buffer of both networks is finite (one host sync)."""
        tensors = [t for module in (self.generator, self.discriminator)
                   for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
        return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def learning_rates(config: TrainConfig) -> tuple[float, float]:
    """(lr_g, lr_d) after the large-batch rule: x (batch / 32) for linear, its square root for sqrt."""
    ratio = config.batch_size / LR_REFERENCE_BATCH
    factor = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[config.lr_scaling]
    return config.lr_g * factor, config.lr_d * factor


def build_gan(config: TrainConfig, device: torch.device, world: World = World()) -> GAN:
    """Networks and Adam optimisers for `config`, on `device`, in its memory format and way of running small
    maps' convolutions, with D's running state.

    With `--sync-bn` and several processes, G's batch norm layers become SyncBatchNorm (same
    weights and state-dict names), which normalise with the statistics of the global batch.
    """
    generator = build_generator(config)
    if config.sync_bn and world.distributed:
        generator = nn.SyncBatchNorm.convert_sync_batchnorm(generator)
    generator = generator.to(device)
    discriminator = build_discriminator(config).to(device)
    memory_format = resolve_memory_format(config.memory_format, config.precision, device)
    generator.to(memory_format=memory_format)
    discriminator.to(memory_format=memory_format)
    if resolve_convolutions(config.convolutions, config.precision, device, r1=config.r1) == "matmul":
        use_matmul(generator)
        use_matmul(discriminator)
    lr_g, lr_d = learning_rates(config)
    # The fused kernel updates every parameter in one pass (same arithmetic as the default loop).
    adam = dict(betas=(config.beta1, config.beta2), fused=device.type in ("cpu", "cuda"))
    return GAN(generator, discriminator,
               torch.optim.Adam(generator.parameters(), lr=lr_g, **adam),
               torch.optim.Adam(discriminator.parameters(), lr=lr_d, **adam),
               ema=EMA(generator, decay=config.ema_decay) if config.ema_decay > 0 else None,
               calibration_samples=calibration_samples(config.image_size),
               ada=AdaptiveAugment(target=config.ada_target, speed=config.ada_speed, batch_size=config.batch_size,
                                   device=device, world=world, geometric=config.ada_geometric,
                                   cutout=config.ada_cutout)
               if config.ada_target else None,
               lecam=LeCam(config.lecam, device=device, world=world) if config.lecam else None,
               memory_format=memory_format)


class TrainingStep:
    """One training step of a GAN with its recipe: `d_steps` D steps, then one G step and the EMA update.

    The recipe: the `loss` (losses.py), differentiable augmentation of D's inputs (`augment`, or
    the GAN's adaptive augmentation), LeCam regularisation (the GAN's), the mode-seeking weight,
    whether the G step reuses the D step's generated batch (`reuse_fake`), and the precision
    (`autocast`, a factory of the forward passes' context).
    Labels go to the networks only when the generator takes them (conditional or clusters).

    With several processes (`world`), G and D's training forward each run through their own
    DistributedDataParallel wrapper, so backward averages their gradients over the ranks. The G
    step's pass through D uses D itself: D's weights are frozen there, so nothing is reduced for
    it. G's buffers are copied from rank 0 after each G step, keeping every rank (and its moving
    average) identical.
    """

    def __init__(self, gan: GAN, *, latent_dim: int, loss: str = "bce", augment: bool = False, d_steps: int = 1,
                 mode_seeking: float = 0.0, mode_seeking_pairs: bool = False, mismatched_labels: bool = False,
                 reuse_fake: bool = False, r1: float = 0.0,
                 autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext, world: World = World(),
                 device: torch.device = torch.device("cpu")) -> None:
        self.gan = gan
        self.latent_dim = latent_dim
        self.d_loss = discriminator_loss(loss)
        self.g_loss = generator_loss(loss)
        self.augment = augment
        self.d_steps = d_steps
        self.mode_seeking = mode_seeking
        self.mode_seeking_pairs = mode_seeking_pairs
        self.mismatched_labels = mismatched_labels
        self.reuse_fake = reuse_fake
        self.r1 = r1
        self.autocast = autocast
        self.labelled = gan.generator.num_classes > 0
        self.ada = gan.ada
        self.lecam = gan.lecam
        self.world = world
        self.generate = parallel(world, gan.generator, device)  # G(z, labels)
        self.train_logits = parallel(world, Logits(gan.discriminator), device)  # D's logits in the D step

    @classmethod
    def from_config(cls, gan: GAN, config: TrainConfig, device: torch.device, world: World = World()
                    ) -> TrainingStep:
        """The step that `config`'s recipe describes, in its precision on `device`, for this process of `world`."""
        return cls(gan, latent_dim=config.latent_dim, loss=config.loss, augment=config.augment,
                   d_steps=config.d_steps, mode_seeking=config.mode_seeking,
                   mode_seeking_pairs=config.mode_seeking_pairs, mismatched_labels=config.mismatched_labels,
                   reuse_fake=config.reuse_fake,
                   r1=config.r1, autocast=autocast_for(config.precision, device), world=world, device=device)

    def __call__(self, real: torch.Tensor, labels: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Train on a real batch (B, C, H, W) and its labels (B,); returns (d_loss, D(x), D(G(z)), g_loss).

        As in the tutorial, each step draws its own noise. With `reuse_fake`, the G step reuses the
        batch the last D step was shown (one generator forward per step instead of two). A labelled
        GAN's generated images are asked to be the classes of the real batch.
        """
        labels = labels if self.labelled else None
        generator = self.generate
        for _ in range(self.d_steps - 1):
            noise = torch.randn(real.shape[0], self.latent_dim, device=real.device)
            with self.autocast(), torch.no_grad():
                fake = generator(noise, labels)
            self.discriminator_step(real, fake, labels)
        noise = torch.randn(real.shape[0], self.latent_dim, device=real.device)  # sized to the (maybe partial) batch
        with self.autocast():
            if self.reuse_fake:
                fake = generator(noise, labels)  # (B, C, H, W), graph kept for the G step
            else:
                with torch.no_grad():
                    fake = generator(noise, labels)
        d_loss, d_real, d_fake = self.discriminator_step(real, fake.detach(), labels)
        penalty = None
        if not self.reuse_fake:
            g_noise = torch.randn_like(noise)
            with self.autocast():
                g_fake = generator(g_noise, labels)
            if self.mode_seeking:  # the D step's batch: same labels, other noise, so its images should differ
                penalty = self.mode_seeking * mode_seeking_loss(g_fake, fake, g_noise, noise,
                                                                   per_pair=self.mode_seeking_pairs)
            fake = g_fake
        g_loss = self.generator_step(fake, labels, penalty=penalty)
        if self.ada is not None:
            self.ada.end_step()
        return d_loss, d_real, d_fake, g_loss

    def discriminator_step(self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One Adam step on D; returns (d_loss, mean D(x), mean D(G(z))), still on the device.

        L_D = ½ [BCE(D(x), 1) + BCE(D(G(z)), 0)] for the tutorial's loss, plus with `r1` the R1
        penalty γ/2 · E|∇ₓ D(x)|² (Mescheder et al., 2018), which keeps D flat on the data, and
        with the GAN's `lecam` its penalty on the real and generated logits. With
        `mismatched_labels`, real images paired with a wrong label y' join the fakes (Reed et al.,
        2016): L_D = ½ [BCE(D(x, y), 1) + ½ (BCE(D(G(z, y), y), 0) + BCE(D(x, y'), 0))]. Real and
        generated images go through D as one batch, which `Logits` splits into one pass per group
        when D has batch norm.
        """
        opt_d = self.gan.opt_d
        opt_d.zero_grad(set_to_none=True)
        if self.r1:
            real = real.detach().requires_grad_(True)
        images, image_labels = [real, fake], [labels, labels]
        if self.mismatched_labels and labels is not None:
            images.append(real)  # the real batch again, each image with another class's label
            image_labels.append(wrong_labels(labels, self.gan.generator.num_classes))
        with self.autocast():
            joined_labels = None if labels is None else torch.cat(image_labels)
            d_logits = functools.partial(self.train_logits, groups=len(images))
            logits = self._d_logits(d_logits, torch.cat(images), joined_labels).float()  # (2B, 1), or (3B, 1)
        real_logits, fake_logits, *mismatched_logits = logits.split(real.shape[0])
        d_loss = self.d_loss(real_logits, torch.cat([fake_logits, *mismatched_logits]))
        objective = d_loss
        if self.r1:
            objective = objective + 0.5 * self.r1 * r1_penalty(real_logits, real)
        if self.lecam is not None:
            objective = objective + self.lecam(real_logits, fake_logits)
        objective.backward()
        opt_d.step()
        if self.ada is not None:
            self.ada.observe(real_logits)
        return d_loss.detach(), torch.sigmoid(real_logits).mean().detach(), torch.sigmoid(fake_logits).mean().detach()

    def generator_step(self, fake: torch.Tensor, labels: torch.Tensor | None = None, *,
                       penalty: torch.Tensor | None = None) -> torch.Tensor:
        """One Adam step on G through `fake = G(z)` (with its graph), then the EMA update; returns g_loss.

        L_G = BCE(D(G(z)), 1), i.e. -log D(G(z)), for the tutorial's loss, plus `penalty`. D's weights
        are frozen for this backward pass: their gradients would be thrown away, so they are not computed.
        """
        gan = self.gan
        gan.opt_g.zero_grad(set_to_none=True)
        gan.discriminator.requires_grad_(False)
        try:
            with self.autocast():
                logits = self._d_logits(gan.discriminator.logits, fake, labels).float()  # (B, 1)
            g_loss = self.g_loss(logits)
            (g_loss if penalty is None else g_loss + penalty).backward()
        finally:
            gan.discriminator.requires_grad_(True)
        gan.opt_g.step()
        for network in (gan.generator, gan.discriminator):  # batch norm's running statistics, from rank 0
            broadcast_buffers(self.world, network)
        if gan.ema is not None:
            gan.ema.update(gan.generator)
        return g_loss.detach()

    def _d_logits(self, logits: Callable[..., torch.Tensor], images: torch.Tensor, labels: torch.Tensor | None
                  ) -> torch.Tensor:
        """D's `logits` (B, 1) of images (augmented first when the recipe says so), conditioned on `labels`."""
        if self.augment:
            images = diff_augment(images)
        if self.ada is not None:
            images = self.ada(images)
        return logits(images, labels)


class Logits(nn.Module):
    """A discriminator's logits of the D step's batch, real then generated images (then, with
    mismatched labels, real images again), as a module's forward (DistributedDataParallel wraps
    `forward` alone).

    A discriminator without batch norm takes every group in one pass (the same result, cheaper);
    one with batch norm (or another layer that looks across the batch, `batch_dependent`) takes
    each group in its own pass, so each is normalised by its own statistics, as in the DCGAN paper.
    """

    def __init__(self, discriminator: nn.Module) -> None:
        super().__init__()
        self.discriminator = discriminator
        self.separate = any(isinstance(m, nn.modules.batchnorm._BatchNorm) or getattr(m, "batch_dependent", False)
                            for m in discriminator.modules())

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None, groups: int = 2) -> torch.Tensor:
        if not self.separate:
            return self.discriminator.logits(images, labels)
        parts = zip(images.chunk(groups), (None,) * groups if labels is None else labels.chunk(groups))
        return torch.cat([self.discriminator.logits(part, part_labels) for part, part_labels in parts])


def wrong_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """For each label, another class drawn uniformly from the other num_classes - 1: (B,)."""
    shift = torch.randint(1, num_classes, labels.shape, device=labels.device)
    return (labels + shift) % num_classes


def mode_seeking_loss(fake: torch.Tensor, anchor: torch.Tensor, noise: torch.Tensor, anchor_noise: torch.Tensor,
                      *, per_pair: bool = False) -> torch.Tensor:
    """1 / (mean |G(z) - G(z')| / mean |z - z'|): large when different noise gives the same image.

    `per_pair`: the mean over pairs i of 1 / (mean |G(z_i) - G(z'_i)| / mean |z_i - z'_i|). Its
    gradient on a pair grows as 1 / ratio_i², so the most alike pairs (collapsed modes) are pushed
    apart hardest, and pairs already far apart hardly at all; the batch's one ratio pushes every
    pair equally.
    """
    if per_pair:
        image_gap = (fake.float() - anchor.float()).abs().flatten(1).mean(dim=1)  # (B,)
        noise_gap = (noise - anchor_noise).abs().flatten(1).mean(dim=1)  # (B,)
        return (1 / (image_gap / noise_gap + 1e-5)).mean()
    ratio = (fake.float() - anchor.float()).abs().mean() / (noise - anchor_noise).abs().mean()
    return 1 / (ratio + 1e-5)
