"""Training: `train` orchestrates `discriminator_step` and `generator_step` over in-memory batches."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .augment import diff_augment
from .checkpoint import save_checkpoint
from .clusters import cluster_images
from .conditional import ClusterGenerator, ConditionalGenerator, ProjectionDiscriminator
from .config import TrainConfig
from .data import ImageData, ShuffledBatches, load_data
from .ema import EMA
from .errors import UserError, reason
from .evaluation import evaluate_during_training
from .losses import discriminator_loss, generator_loss
from .models import Discriminator, Generator, with_spectral_norm
from .rundir import RunDirectory

MAX_ROLLBACKS = 3
MIN_IMAGES_PER_CLUSTER = 100  # --clusters: fewer clusters for small data sets
LR_REFERENCE_BATCH = 32  # the tutorial's batch size, which its learning rates were tuned for
WARMUP_STEPS = 20  # excluded from the reported images/s, as in the baseline benchmark


def select_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available[name]:
        raise UserError(f"--device {name}: not available on this machine")
    return torch.device(name)


@dataclass
class GAN:
    """The two networks, their optimisers, the loss, and the generator's moving average (if any)."""

    generator: Generator | ConditionalGenerator
    discriminator: Discriminator | ProjectionDiscriminator
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam
    autocast: Any = field(default=contextlib.nullcontext)
    loss: str = "bce"
    augment: bool = False
    ema: EMA | None = None

    def state_dict(self) -> dict[str, Any]:
        state = {"generator": self.generator.state_dict(), "discriminator": self.discriminator.state_dict(),
                 "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, payload: dict[str, Any]) -> None:
        self.generator.load_state_dict(payload["generator"])
        self.discriminator.load_state_dict(payload["discriminator"])
        self.opt_g.load_state_dict(payload["opt_g"])
        self.opt_d.load_state_dict(payload["opt_d"])
        if self.ema is not None:
            self.ema.load_state_dict(payload["ema"])

    def sampler(self) -> Generator | ConditionalGenerator:
        """The generator that samples are drawn from: the moving average when there is one."""
        return self.ema.module if self.ema is not None else self.generator


def build_generator(config: TrainConfig) -> Generator | ConditionalGenerator:
    """The generator that a config describes."""
    if config.clusters:
        return ClusterGenerator(latent_dim=config.latent_dim, num_clusters=config.clusters, channels=config.channels,
                                image_size=config.image_size)
    if config.conditional:
        return ConditionalGenerator(latent_dim=config.latent_dim, num_classes=config.num_classes,
                                    channels=config.channels, image_size=config.image_size)
    return Generator(latent_dim=config.latent_dim, channels=config.channels, image_size=config.image_size)


def build_discriminator(config: TrainConfig) -> Discriminator | ProjectionDiscriminator:
    """The discriminator that a config describes (spectrally normalised when asked)."""
    if config.conditional or config.clusters:
        discriminator = ProjectionDiscriminator(num_classes=config.num_classes or config.clusters,
                                                channels=config.channels, image_size=config.image_size)
    else:
        discriminator = Discriminator(channels=config.channels, image_size=config.image_size)
    return with_spectral_norm(discriminator) if config.spectral_norm else discriminator


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is fast on `device`: CUDA with bf16, or a CPU whose oneDNN has bf16 kernels."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` is bf16 where the hardware runs it natively, else fp32."""
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


def learning_rates(config: TrainConfig) -> tuple[float, float]:
    """(lr_g, lr_d) after the large-batch rule: x (batch / 32) for linear, its square root for sqrt."""
    ratio = config.batch_size / LR_REFERENCE_BATCH
    factor = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[config.lr_scaling]
    return config.lr_g * factor, config.lr_d * factor


def build_gan(config: TrainConfig, device: torch.device) -> GAN:
    """Networks and Adam optimisers for `config`, on `device`, in its memory format and precision."""
    generator = build_generator(config).to(device)
    discriminator = build_discriminator(config).to(device)
    if config.channels_last:
        generator.to(memory_format=torch.channels_last)
        discriminator.to(memory_format=torch.channels_last)
    autocast = contextlib.nullcontext
    if resolve_precision(config.precision, device) == "bf16":
        def autocast() -> Any:
            return torch.autocast(device.type, dtype=torch.bfloat16)
    lr_g, lr_d = learning_rates(config)
    # The fused kernel updates every parameter in one pass (same arithmetic as the default loop).
    adam = dict(betas=(config.beta1, config.beta2), fused=device.type in ("cpu", "cuda"))
    return GAN(generator, discriminator,
               torch.optim.Adam(generator.parameters(), lr=lr_g, **adam),
               torch.optim.Adam(discriminator.parameters(), lr=lr_d, **adam),
               autocast, loss=config.loss, augment=config.augment,
               ema=EMA(generator, decay=config.ema_decay) if config.ema_decay > 0 else None)


def train_step(gan: GAN, real: torch.Tensor, *, latent_dim: int, reuse_fake: bool,
               labels: torch.Tensor | None = None, d_steps: int = 1, mode_seeking: float = 0.0
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`d_steps` D steps then one G step on a batch; returns (d_loss, D(x), D(G(z)), g_loss) on the device.

    As in the tutorial, each step draws its own noise. With `reuse_fake`, the G step reuses the
    batch the last D step was shown (one generator forward per step instead of two). A conditional
    GAN's generated images are asked to be the classes of the real batch, `labels` (B,).
    `mode_seeking` > 0 adds that multiple of `mode_seeking_loss` to G's loss.
    """
    for _ in range(d_steps - 1):
        noise = torch.randn(real.shape[0], latent_dim, device=real.device)
        with gan.autocast(), torch.no_grad():
            fake = _generate(gan, noise, labels)
        discriminator_step(gan, real, fake, labels)
    noise = torch.randn(real.shape[0], latent_dim, device=real.device)  # sized to the (maybe partial) batch
    with gan.autocast():
        if reuse_fake:
            fake = _generate(gan, noise, labels)  # (B, C, H, W), graph kept for the G step
        else:
            with torch.no_grad():
                fake = _generate(gan, noise, labels)
    conditioned = () if labels is None else (labels,)  # the unconditional calls stay (gan, images)
    d_loss, d_real, d_fake = discriminator_step(gan, real, fake.detach(), *conditioned)
    penalty = None
    if not reuse_fake:
        g_noise = torch.randn_like(noise)
        with gan.autocast():
            g_fake = _generate(gan, g_noise, labels)
        if mode_seeking:  # the D step's batch: same labels, other noise, so its images should differ
            penalty = mode_seeking * mode_seeking_loss(g_fake, fake, g_noise, noise)
        fake = g_fake
    g_loss = generator_step(gan, fake, *conditioned, penalty=penalty)
    return d_loss, d_real, d_fake, g_loss


def _generate(gan: GAN, noise: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    return gan.generator(noise) if labels is None else gan.generator(noise, labels)


def _d_logits(gan: GAN, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """D's logits (B, 1) of images (augmented first when the recipe says so), conditioned on `labels`."""
    if gan.augment:
        images = diff_augment(images)
    return gan.discriminator.logits(images) if labels is None else gan.discriminator.logits(images, labels)


def discriminator_step(gan: GAN, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Adam step on D; returns (d_loss, mean D(x), mean D(G(z))), still on the device.

    L_D = ½ [BCE(D(x), 1) + BCE(D(G(z)), 0)]. Real and generated images go through D as one
    batch: D has no batch norm, so this is the same loss in one pass instead of two.
    """
    gan.opt_d.zero_grad(set_to_none=True)
    with gan.autocast():
        both = None if labels is None else torch.cat([labels, labels])
        logits = _d_logits(gan, torch.cat([real, fake]), both).float()  # (2B, 1)
    real_logits, fake_logits = logits.split(real.shape[0])
    d_loss = discriminator_loss(gan.loss)(real_logits, fake_logits)  # bce: the tutorial's ½ [BCE(r, 1) + BCE(f, 0)]
    d_loss.backward()
    gan.opt_d.step()
    return d_loss.detach(), torch.sigmoid(real_logits).mean().detach(), torch.sigmoid(fake_logits).mean().detach()


def mode_seeking_loss(fake: torch.Tensor, anchor: torch.Tensor, noise: torch.Tensor, anchor_noise: torch.Tensor
                      ) -> torch.Tensor:
    """1 / (mean |G(z) - G(z')| / mean |z - z'|): large when different noise gives the same image."""
    ratio = (fake.float() - anchor.float()).abs().mean() / (noise - anchor_noise).abs().mean()
    return 1 / (ratio + 1e-5)


def generator_step(gan: GAN, fake: torch.Tensor, labels: torch.Tensor | None = None, *,
                   penalty: torch.Tensor | None = None) -> torch.Tensor:
    """One Adam step on G through `fake = G(z)` (with its graph), then the EMA update; returns g_loss.

    L_G = BCE(D(G(z)), 1), i.e. -log D(G(z)). D's weights are frozen for this backward pass:
    their gradients would be thrown away, so they are not computed.
    """
    gan.opt_g.zero_grad(set_to_none=True)
    gan.discriminator.requires_grad_(False)
    try:
        with gan.autocast():
            logits = _d_logits(gan, fake, labels).float()  # (B, 1)
        g_loss = generator_loss(gan.loss)(logits)
        (g_loss if penalty is None else g_loss + penalty).backward()
    finally:
        gan.discriminator.requires_grad_(True)
    gan.opt_g.step()
    if gan.ema is not None:
        gan.ema.update(gan.generator)
    return g_loss.detach()


class LossMeter:
    """Sums losses on the device and reads them back only when asked (no host sync per step)."""

    NAMES = ("d_loss", "g_loss", "d_real", "d_fake")

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(len(self.NAMES), device=device)
        self.count = 0

    def add(self, *values: torch.Tensor) -> None:
        self.sums += torch.stack(values)
        self.count += 1

    def read(self) -> dict[str, float]:
        """Means since the last read (one device-to-host copy), then reset."""
        means = (self.sums / max(self.count, 1)).tolist()
        self.sums.zero_()
        self.count = 0
        return dict(zip(self.NAMES, means))


class StopRequest:
    """Turns the first SIGINT/SIGTERM into a request to stop after the current step.

    A second signal raises KeyboardInterrupt at once; files are written atomically, so
    nothing on disk is corrupted either way.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise Interrupted(signum)
        self.signum = signum
        tqdm.write(f"{signal.Signals(signum).name}: stopping after this step "
                   "(send it again to exit at once)", file=sys.stderr)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class Interrupted(KeyboardInterrupt):
    """A second SIGINT/SIGTERM: leave at once (every file is written atomically, so none is damaged)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Diverged(Exception):
    """A non-finite loss or weight was seen."""


@dataclass
class TrainResult:
    """How a run ended: `completed`, `time_limit` or `interrupted` (with the signal number)."""

    status: str
    step: int
    images_per_s: float
    signum: int | None = None


def capture_rng() -> dict[str, Any]:
    """Every random state a step consumes, in a form `weights_only` loading accepts."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Undo `capture_rng`."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])


@dataclass
class Position:
    """Where a run is: steps done, and the epoch and batch of the next step."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    lr_scale: float = 1.0
    rollbacks: int = 0
    train_seconds: float = 0.0  # wall-clock spent training so far, evaluations during training excluded


def make_payload(config: TrainConfig, gan: GAN, position: Position, data_size: int) -> dict[str, Any]:
    """Everything a checkpoint holds."""
    return {"config": config.to_dict(), **gan.state_dict(), "step": position.step, "epoch": position.epoch,
            "batch": position.batch, "lr_scale": position.lr_scale, "rollbacks": position.rollbacks,
            "train_seconds": position.train_seconds, "rng": capture_rng(), "data_size": data_size}


def restore(gan: GAN, payload: dict[str, Any], source: str) -> Position:
    """Load a checkpoint's weights, optimisers and RNG states; returns its position."""
    try:
        gan.load_state_dict(payload)
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise UserError(f"{source}: checkpoint does not match this model's architecture ({reason(exc)})") from None
    try:
        restore_rng(payload["rng"])
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise UserError(f"{source}: damaged checkpoint (random-number states: {exc})") from None
    return Position(step=payload["step"], epoch=payload["epoch"], batch=payload["batch"],
                    lr_scale=payload.get("lr_scale", 1.0), rollbacks=payload.get("rollbacks", 0),
                    train_seconds=payload.get("train_seconds", 0.0))


def check_same_data(payload: dict[str, Any], data_size: int, source: str) -> None:
    """Refuse a resume on different data: the position (and any clusters) would point elsewhere."""
    stored = payload.get("data_size")
    if stored is not None and stored != data_size:
        raise UserError(f"{source}: the run was trained on {stored} images but the data now has {data_size}; "
                        f"exact resume needs the same data")


def check_goal(payload: dict[str, Any], goal: int, source: str) -> None:
    """Refuse a resume already past the total number of steps asked for."""
    if payload["step"] > goal:
        raise UserError(f"{source}: the run is already at step {payload['step']}, past the {goal} steps asked "
                        f"for (--steps and --epochs name the run's total)")


def finite_weights(gan: GAN) -> bool:
    """Whether every floating-point parameter and buffer of both networks is finite (one host sync)."""
    tensors = [t for module in (gan.generator, gan.discriminator)
               for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def set_lr_scale(gan: GAN, config: TrainConfig, scale: float) -> None:
    lr_g, lr_d = learning_rates(config)
    for group in gan.opt_g.param_groups:
        group["lr"] = lr_g * scale
    for group in gan.opt_d.param_groups:
        group["lr"] = lr_d * scale


def total_steps(config: TrainConfig, batches_per_epoch: int) -> int:
    """`--steps` when given, else `--epochs` whole epochs."""
    return config.steps or config.epochs * batches_per_epoch


def train(config: TrainConfig, run: RunDirectory, *, resume: dict[str, Any] | None = None,
          progress: bool = True) -> TrainResult:
    """Train a GAN as `config` says, writing everything into `run`; resumes from a checkpoint payload.

    SIGINT/SIGTERM are caught from the start, so even a signal during set-up ends with a checkpoint.
    """
    with StopRequest() as stop:
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        np.random.seed(config.seed)
        device = select_device(config.device)
        data = load_data(config.data, channels=config.channels, image_size=config.image_size,
                         download=config.download)
        if resume is not None:
            check_same_data(resume, len(data), str(run.checkpoints / "last.pt"))
        config = with_classes(config, len(data.classes), data.source)
        config, data, prior = with_clusters(config, data)
        batches = ShuffledBatches(data, batch_size=config.batch_size, seed=config.seed, device=device)
        goal = total_steps(config, batches.batches_per_epoch)
        gan = build_gan(config, device)
        if prior is not None:
            set_cluster_prior(gan, prior)
        fixed_noise = torch.randn(config.grid_size, config.latent_dim,
                                  generator=torch.Generator().manual_seed(config.seed + 1)).to(device)
        sampler = grid_sampler(gan, config, device)
        if resume is None:
            position = Position()
            run.start(config)
            run.save_samples(sampler, fixed_noise, 0)
            save_checkpoint(make_payload(config, gan, position, len(data)), run.checkpoints,
                            keep=config.keep_checkpoints)
        else:
            check_goal(resume, goal, str(run.checkpoints / "last.pt"))
            position = restore(gan, resume, str(run.checkpoints / "last.pt"))
            run.resume(config, position.step)
        tqdm.write(f"run directory: {run.root}", file=sys.stderr)
        set_lr_scale(gan, config, position.lr_scale)
        result = _loop(config, gan, batches, fixed_noise, sampler, run, position, goal, stop, progress)
    run.finish()
    return result


def with_classes(config: TrainConfig, num_classes: int, source: str) -> TrainConfig:
    """A conditional config with `num_classes` from the data (refused if it was trained on other classes)."""
    if not config.conditional:
        return config
    if num_classes < 2:
        raise UserError(f"--conditional: {source} has {num_classes} class; a conditional GAN needs at least 2")
    if config.num_classes not in (0, num_classes):
        raise UserError(f"--conditional: the run was trained with {config.num_classes} classes but "
                        f"{source} has {num_classes}")
    return config.replace(num_classes=num_classes)


def with_clusters(config: TrainConfig, data: ImageData) -> tuple[TrainConfig, ImageData, torch.Tensor | None]:
    """With `--clusters K`: the data relabelled by k-means clusters, and the clusters' sizes as fractions.

    Small data sets get fewer clusters (at least MIN_IMAGES_PER_CLUSTER images each on average),
    and none below two; the config records the number used.
    """
    if not config.clusters:
        return config, data, None
    clusters = min(config.clusters, len(data) // MIN_IMAGES_PER_CLUSTER)
    if clusters != config.clusters:
        tqdm.write(f"--clusters {config.clusters}: {data.source} has {len(data)} images, enough for "
                   + (f"{clusters} clusters" if clusters >= 2 else "no clusters: training unconditionally")
                   + f" (at least {MIN_IMAGES_PER_CLUSTER} images per cluster)", file=sys.stderr)
        config = config.replace(clusters=clusters if clusters >= 2 else 0)
        if not config.clusters:
            return config, data, None
    tqdm.write(f"clustering {len(data)} images into {config.clusters} groups", file=sys.stderr)
    labels, prior = cluster_images(data.images, config.clusters, seed=config.seed)
    classes = tuple(f"cluster {i}" for i in range(config.clusters))
    return config, dataclasses.replace(data, labels=labels, classes=classes), prior


def set_cluster_prior(gan: GAN, prior: torch.Tensor) -> None:
    """Store the clusters' sizes in the generator (and its moving average), which samples by them."""
    for generator in (gan.generator, gan.sampler()):
        generator.cluster_prior.copy_(prior)


class FixedLabels(torch.nn.Module):
    """A conditional generator with its labels fixed, callable on noise alone (for the sample grids)."""

    def __init__(self, generator: ConditionalGenerator, labels: torch.Tensor) -> None:
        super().__init__()
        self.generator = generator
        self.latent_dim = generator.latent_dim
        self.register_buffer("labels", labels, persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z, self.labels[: z.shape[0]])


def grid_sampler(gan: GAN, config: TrainConfig, device: torch.device) -> torch.nn.Module:
    """What draws the progress grids from the fixed noise: the sampling generator (conditional: classes in turn)."""
    if config.clusters:  # fixed clusters, drawn by their sizes like any sample
        labels = gan.sampler().sample_clusters(config.grid_size, seed=config.seed + 1).to(device)
    elif config.conditional:
        labels = torch.arange(config.grid_size, device=device) % config.num_classes
    else:
        return gan.sampler()
    return FixedLabels(gan.sampler(), labels)


def _loop(config: TrainConfig, gan: GAN, batches: ShuffledBatches, fixed_noise: torch.Tensor,
          sampler: torch.nn.Module, run: RunDirectory, position: Position, goal: int, stop: StopRequest,
          progress: bool) -> TrainResult:
    device = fixed_noise.device
    meter = LossMeter(device)
    window_start = clock = time.perf_counter()
    # --time-limit counts training time: evaluations during training do not use it up
    deadline = position.train_seconds + config.time_limit * 60 if config.time_limit else math.inf
    first_step = warm_step = position.step
    warm_seconds = position.train_seconds
    bar = tqdm(total=goal, initial=position.step, unit="step", disable=not progress, dynamic_ncols=True)
    status = "completed"
    evaluator = evaluate_during_training(config, run, device)  # None without --eval-every
    while position.step < goal:
        for real, labels in batches.epoch(position.epoch, position.batch):
            d_loss, d_real, d_fake, g_loss = train_step(gan, _as_format(real, config), latent_dim=config.latent_dim,
                                                        reuse_fake=config.reuse_fake, d_steps=config.d_steps,
                                                        mode_seeking=config.mode_seeking,
                                                        labels=labels if config.conditional or config.clusters
                                                        else None)
            meter.add(d_loss, g_loss, d_real, d_fake)
            position.step += 1
            position.batch += 1
            bar.update(1)
            timing_mark = position.step - first_step == WARMUP_STEPS or position.step >= goal  # sync only there
            position.train_seconds += (_synchronized_time(device) if timing_mark else time.perf_counter()) - clock
            if position.step - first_step == WARMUP_STEPS:
                warm_seconds, warm_step = position.train_seconds, position.step
            boundary = position.batch == batches.batches_per_epoch
            if boundary:
                position.epoch, position.batch = position.epoch + 1, 0
            if position.train_seconds >= deadline:
                status = "time_limit"
            elif stop.signum is not None:
                status = "interrupted"
            done = status != "completed" or position.step >= goal
            evaluation_start = time.perf_counter()
            final = position.step >= goal or status == "time_limit"  # not on a signal: the user wants out
            scores = evaluator(gan.sampler(), position.step, final, lambda: make_payload(
                config, gan, position, batches.images.shape[0])) if evaluator else {}
            clock = time.perf_counter()
            window_start += clock - evaluation_start  # images/s of the window: training time only
            if position.step % config.log_every == 0 or done or scores or _is_due(position.step,
                                                                                   config.checkpoint_every):
                try:
                    if not finite_weights(gan):  # a weight can break before any loss shows it
                        raise Diverged
                    window_start = _log(run, meter, position, batches.batch_size, window_start, bar, scores)
                except Diverged:
                    position = _roll_back(config, gan, run, position)
                    bar.n = position.step
                    meter = LossMeter(device)
                    window_start = time.perf_counter()
                    break
            if _is_due(position.step, config.sample_every):
                run.save_samples(sampler, fixed_noise, position.step)
            if done or _is_due(position.step, config.checkpoint_every):
                save_checkpoint(make_payload(config, gan, position, batches.images.shape[0]), run.checkpoints,
                                keep=config.keep_checkpoints)
            if done or boundary:
                break
        if status != "completed":
            break
    bar.close()
    if not run.has_samples(position.step):
        run.save_samples(sampler, fixed_noise, position.step)
    elapsed = position.train_seconds - warm_seconds
    steps_timed = position.step - warm_step
    images_per_s = steps_timed * batches.batch_size / elapsed if elapsed > 0 and steps_timed > 0 else 0.0
    return TrainResult(status, position.step, images_per_s, stop.signum)


def _is_due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def _as_format(images: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    return images.contiguous(memory_format=torch.channels_last) if config.channels_last else images


def _synchronized_time(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _log(run: RunDirectory, meter: LossMeter, position: Position, batch_size: int, window_start: float,
         bar: tqdm, scores: dict[str, float] | None = None) -> float:
    """Read the window's mean losses (the only host sync), append a metrics row; raise Diverged on NaN."""
    steps = meter.count
    losses = meter.read()
    if not all(math.isfinite(v) for v in losses.values()):
        raise Diverged
    now = time.perf_counter()
    images_per_s = steps * batch_size / max(now - window_start, 1e-9)
    run.log_metrics({"step": position.step, "epoch": position.epoch, **losses, "images_per_s": images_per_s,
                     "wall_time": position.train_seconds, **(scores or {})})
    bar.set_postfix(d_loss=f"{losses['d_loss']:.3f}", g_loss=f"{losses['g_loss']:.3f}",
                    d_x=f"{losses['d_real']:.2f}", d_gz=f"{losses['d_fake']:.2f}", img_s=f"{images_per_s:.0f}")
    return now


def _roll_back(config: TrainConfig, gan: GAN, run: RunDirectory, position: Position) -> Position:
    """After a non-finite loss or weight: reload the last checkpoint with half the learning rates, or give up."""
    from .checkpoint import load_checkpoint

    if position.rollbacks >= MAX_ROLLBACKS:
        raise UserError(f"training diverged (non-finite loss or weight near step {position.step}) after "
                        f"{MAX_ROLLBACKS} roll-backs with lower learning rates; the last good checkpoint "
                        f"is {run.checkpoints / 'last.pt'}")
    payload = load_checkpoint(run.checkpoints / "last.pt")
    restored = restore(gan, payload, str(run.checkpoints / "last.pt"))
    restored.rollbacks = position.rollbacks + 1
    restored.lr_scale = position.lr_scale * 0.5
    restored.train_seconds = position.train_seconds  # the discarded steps took time too
    set_lr_scale(gan, config, restored.lr_scale)
    run.truncate_metrics(restored.step)
    run.truncate_samples(restored.step)
    tqdm.write(f"non-finite loss or weight near step {position.step}: rolled back to step {restored.step} "
               f"with learning rates x{restored.lr_scale:g}", file=sys.stderr)
    return restored
