"""Training: `train` orchestrates `discriminator_step` and `generator_step` over in-memory batches."""

from __future__ import annotations

import contextlib
import math
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import save_checkpoint
from .config import TrainConfig
from .data import ShuffledBatches, load_data
from .errors import UserError, reason
from .evaluation import evaluate_during_training
from .models import Discriminator, Generator
from .rundir import RunDirectory

MAX_ROLLBACKS = 3
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
    """The two networks and their optimisers."""

    generator: Generator
    discriminator: Discriminator
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam
    autocast: Any = field(default=contextlib.nullcontext)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.state_dict(), "discriminator": self.discriminator.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}

    def load_state_dict(self, payload: dict[str, Any]) -> None:
        self.generator.load_state_dict(payload["generator"])
        self.discriminator.load_state_dict(payload["discriminator"])
        self.opt_g.load_state_dict(payload["opt_g"])
        self.opt_d.load_state_dict(payload["opt_d"])


def build_generator(config: TrainConfig) -> Generator:
    """The generator that a config describes."""
    return Generator(latent_dim=config.latent_dim, channels=config.channels, image_size=config.image_size)


def build_gan(config: TrainConfig, device: torch.device) -> GAN:
    """Networks and Adam optimisers for `config`, on `device`, in its memory format and precision."""
    generator = build_generator(config).to(device)
    discriminator = Discriminator(channels=config.channels, image_size=config.image_size).to(device)
    if config.channels_last:
        generator.to(memory_format=torch.channels_last)
        discriminator.to(memory_format=torch.channels_last)
    betas = (config.beta1, config.beta2)
    autocast = contextlib.nullcontext
    if config.precision == "bf16":
        def autocast() -> Any:
            return torch.autocast(device.type, dtype=torch.bfloat16)
    return GAN(generator, discriminator,
               torch.optim.Adam(generator.parameters(), lr=config.lr_g, betas=betas),
               torch.optim.Adam(discriminator.parameters(), lr=config.lr_d, betas=betas),
               autocast)


def discriminator_step(gan: GAN, real: torch.Tensor, noise: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Adam step on D; returns (d_loss, mean D(x), mean D(G(z))), still on the device.

    L_D = ½ [BCE(D(x), 1) + BCE(D(G(z)), 0)]. Real and generated images go through D as one
    batch: D has no batch norm, so this is the same loss in one pass instead of two.
    """
    gan.opt_d.zero_grad(set_to_none=True)
    with gan.autocast():
        with torch.no_grad():
            fake = gan.generator(noise)  # (B, C, H, W), no graph into G
        logits = gan.discriminator.logits(torch.cat([real, fake])).float()  # (2B, 1)
    real_logits, fake_logits = logits.split(real.shape[0])
    d_loss_real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    d_loss_fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    d_loss = 0.5 * (d_loss_real + d_loss_fake)
    d_loss.backward()
    gan.opt_d.step()
    return d_loss.detach(), torch.sigmoid(real_logits).mean().detach(), torch.sigmoid(fake_logits).mean().detach()


def generator_step(gan: GAN, noise: torch.Tensor) -> torch.Tensor:
    """One Adam step on G; returns g_loss on the device.

    L_G = BCE(D(G(z)), 1), i.e. -log D(G(z)). D's weights are frozen for this backward pass:
    their gradients would be thrown away, so they are not computed.
    """
    gan.opt_g.zero_grad(set_to_none=True)
    gan.discriminator.requires_grad_(False)
    try:
        with gan.autocast():
            logits = gan.discriminator.logits(gan.generator(noise)).float()  # (B, 1)
        g_loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        g_loss.backward()
    finally:
        gan.discriminator.requires_grad_(True)
    gan.opt_g.step()
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


def make_payload(config: TrainConfig, gan: GAN, position: Position, data_size: int) -> dict[str, Any]:
    """Everything a checkpoint holds."""
    return {"config": config.to_dict(), **gan.state_dict(), "step": position.step, "epoch": position.epoch,
            "batch": position.batch, "lr_scale": position.lr_scale, "rollbacks": position.rollbacks,
            "rng": capture_rng(), "data_size": data_size}


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
                    lr_scale=payload.get("lr_scale", 1.0), rollbacks=payload.get("rollbacks", 0))


def check_resumable(payload: dict[str, Any], data_size: int, goal: int, source: str) -> None:
    """Refuse a resume on different data (the position would point elsewhere) or past its total."""
    stored = payload.get("data_size")
    if stored is not None and stored != data_size:
        raise UserError(f"{source}: the run was trained on {stored} images but the data now has {data_size}; "
                        f"exact resume needs the same data")
    if payload["step"] > goal:
        raise UserError(f"{source}: the run is already at step {payload['step']}, past the {goal} steps asked "
                        f"for (--steps and --epochs name the run's total)")


def finite_weights(gan: GAN) -> bool:
    """Whether every floating-point parameter and buffer of both networks is finite (one host sync)."""
    tensors = [t for module in (gan.generator, gan.discriminator)
               for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def set_lr_scale(gan: GAN, config: TrainConfig, scale: float) -> None:
    for group in gan.opt_g.param_groups:
        group["lr"] = config.lr_g * scale
    for group in gan.opt_d.param_groups:
        group["lr"] = config.lr_d * scale


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
        batches = ShuffledBatches(data, batch_size=config.batch_size, seed=config.seed, device=device)
        goal = total_steps(config, batches.batches_per_epoch)
        gan = build_gan(config, device)
        fixed_noise = torch.randn(config.grid_size, config.latent_dim,
                                  generator=torch.Generator().manual_seed(config.seed + 1)).to(device)
        if resume is None:
            position = Position()
            run.start(config)
            run.save_samples(gan.generator, fixed_noise, 0)
            save_checkpoint(make_payload(config, gan, position, len(data)), run.checkpoints,
                            keep=config.keep_checkpoints)
        else:
            check_resumable(resume, len(data), goal, str(run.checkpoints / "last.pt"))
            position = restore(gan, resume, str(run.checkpoints / "last.pt"))
            run.resume(config, position.step)
        tqdm.write(f"run directory: {run.root}", file=sys.stderr)
        set_lr_scale(gan, config, position.lr_scale)
        result = _loop(config, gan, batches, fixed_noise, run, position, goal, stop, progress)
    run.finish()
    return result


def _loop(config: TrainConfig, gan: GAN, batches: ShuffledBatches, fixed_noise: torch.Tensor,
          run: RunDirectory, position: Position, goal: int, stop: StopRequest, progress: bool) -> TrainResult:
    device = fixed_noise.device
    meter = LossMeter(device)
    start = window_start = time.perf_counter()
    deadline = start + config.time_limit * 60 if config.time_limit else math.inf
    warm_time, warm_step, first_step = None, None, position.step
    bar = tqdm(total=goal, initial=position.step, unit="step", disable=not progress, dynamic_ncols=True)
    status = "completed"
    evaluator = evaluate_during_training(config, run, device)  # None without --eval-every
    while position.step < goal:
        for real, _ in batches.epoch(position.epoch, position.batch):
            d_loss, d_real, d_fake = discriminator_step(gan, _as_format(real, config), _noise(config, real, device))
            g_loss = generator_step(gan, _noise(config, real, device))
            meter.add(d_loss, g_loss, d_real, d_fake)
            position.step += 1
            position.batch += 1
            bar.update(1)
            if position.step - first_step == WARMUP_STEPS:
                warm_time, warm_step = _synchronized_time(device), position.step
            boundary = position.batch == batches.batches_per_epoch
            if boundary:
                position.epoch, position.batch = position.epoch + 1, 0
            if time.perf_counter() >= deadline:
                status = "time_limit"
            elif stop.signum is not None:
                status = "interrupted"
            done = status != "completed" or position.step >= goal
            scores = evaluator(gan.generator, position.step, position.step >= goal, lambda: make_payload(
                config, gan, position, batches.images.shape[0])) if evaluator else {}
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
                run.save_samples(gan.generator, fixed_noise, position.step)
            if done or _is_due(position.step, config.checkpoint_every):
                save_checkpoint(make_payload(config, gan, position, batches.images.shape[0]), run.checkpoints,
                                keep=config.keep_checkpoints)
            if done or boundary:
                break
        if status != "completed":
            break
    bar.close()
    if not run.has_samples(position.step):
        run.save_samples(gan.generator, fixed_noise, position.step)
    elapsed = _synchronized_time(device) - (warm_time or start)
    steps_timed = position.step - (warm_step or first_step)
    images_per_s = steps_timed * batches.batch_size / elapsed if elapsed > 0 and steps_timed > 0 else 0.0
    return TrainResult(status, position.step, images_per_s, stop.signum)


def _is_due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def _noise(config: TrainConfig, real: torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.randn(real.shape[0], config.latent_dim, device=device)  # sized to the (maybe partial) batch


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
                     **(scores or {})})
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
    set_lr_scale(gan, config, restored.lr_scale)
    run.truncate_metrics(restored.step)
    run.truncate_samples(restored.step)
    tqdm.write(f"non-finite loss or weight near step {position.step}: rolled back to step {restored.step} "
               f"with learning rates x{restored.lr_scale:g}", file=sys.stderr)
    return restored
