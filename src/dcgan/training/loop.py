"""The training loop: `train` sets a run up, then `TrainingLoop` runs steps with its named parts.

The parts: the clock (training time, the time limit, images/s), the logger (mean losses per
window: metrics.csv and the progress bar), evaluation (an optional callback, `--eval-every`),
checkpoints, and the roll-back after a non-finite loss or weight.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from tqdm import tqdm

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import TrainConfig, config_from_dict
from ..data import ShuffledBatches, load_data, require_a_batch
from ..device import describe_execution, select_device, synchronized_time
from ..errors import UserError
from ..networks import DEFAULT_D_WIDTH, SMALL_SET_D_WIDTH, SMALL_SET_IMAGES, d_width_for
from .augment import AdaptiveAugment
from .distributed import World, agreed, any_rank, from_main, gather, mean_over_ranks, rank_seed
from .labels import set_cluster_prior, to_stderr, with_classes, with_clusters
from .memory import require_batch_fits
from .rundir import RunDirectory
from .signals import StopRequest
from .state import (Position, capture_rng, check_goal, check_same_data, make_payload, restore, restore_rng,
                    seed_everything, start_from, total_steps)
from .step import GAN, TrainingStep, build_gan
from .tensorboard import TensorBoardRun

MAX_ROLLBACKS = 3
WARMUP_STEPS = 20  # excluded from the reported images/s, as in the baseline benchmark


class Evaluator(Protocol):
    """Scores the sampling generator during training (`--eval-every`); returns metrics.csv columns ({}: not due).

    `payload` makes the checkpoint payload of the current state, for a best-so-far checkpoint.
    """

    def __call__(self, generator: torch.nn.Module, step: int, final: bool,
                 payload: Callable[[], dict[str, Any]]) -> dict[str, float]: ...


EvaluatorFactory = Callable[[TrainConfig, RunDirectory, torch.device], "Evaluator | None"]


# Where a run stands after a step: still running, or how it ended (the goal reached, the time
# limit, or a signal to any rank).
Status = Literal["running", "completed", "time_limit", "interrupted"]


@dataclass
class TrainResult:
    """How a run ended: `completed`, `time_limit` or `interrupted` (with the signal number)."""

    status: Status
    step: int
    images_per_s: float
    signum: int | None = None


class Diverged(Exception):
    """A non-finite loss or weight was seen."""


def train(config: TrainConfig, run: RunDirectory, *, resume: dict[str, Any] | None = None,
          init_weights: dict[str, Any] | None = None, progress: bool = True,
          evaluator: EvaluatorFactory | None = None, world: World = World(),
          notes: tuple[str, ...] = ()) -> TrainResult:
    """Train a GAN as `config` says, writing everything into `run`; resumes from a checkpoint payload, or
    starts a new run from `init_weights`, the payload of `--init-from`'s checkpoint.

    `evaluator`, when given, builds the scorer of `--eval-every` from the final config (the
    classes and clusters are known only once the data is loaded). SIGINT/SIGTERM are caught
    from the start, so even a signal during set-up ends with a checkpoint. In a `world` of
    several processes every rank calls this; rank 0 alone writes `run`. `notes` are logged once the
    data has loaded (so that a refused `--data` is the only line).
    """
    if config.tensorboard and world.is_main:
        run = TensorBoardRun.mirroring(run)
    with StopRequest(quiet=not world.is_main) as stop:
        device = world.device(select_device(config.device))
        loop = agreed(world, lambda: set_up(config, run, device, resume=resume, init_weights=init_weights,
                                            stop=stop, world=world, notes=notes))
        if resume is None:
            from_main(world, lambda: run.start(loop.config))
            loop.save_samples()
            loop.save_checkpoint()
        else:
            from_main(world, lambda: run.resume(loop.config, loop.position.step))
        if world.is_main:
            tqdm.write(f"run directory: {run.root}", file=sys.stderr)
            tqdm.write(execution_line(loop.config, device), file=sys.stderr)
        # Setting up the scorer draws from the random state (its network's initial weights before they are
        # loaded): a new run's stream goes on after that draw, so a resumed one, whose restored state is
        # already past it, must not make it again.
        rng = capture_rng() if resume is not None else None
        scorer = agreed(world, lambda: evaluator(loop.config, run, device) if evaluator and world.is_main else None)
        if rng is not None:
            restore_rng(rng)
        result = loop.run(scorer, progress=progress and world.is_main)
    if world.is_main:
        run.finish()
    return result


def set_up(config: TrainConfig, run: RunDirectory, device: torch.device, *, resume: dict[str, Any] | None,
           stop: StopRequest, world: World, init_weights: dict[str, Any] | None = None,
           notes: tuple[str, ...] = ()) -> TrainingLoop:
    """Everything before the first step that involves no other rank: data, labels, networks, position."""
    if config.batch_size % world.size or config.batch_size // world.size < 2:
        raise UserError(f"--batch-size {config.batch_size} (the global batch) must split into equal parts of at "
                        f"least 2 images over {world.size} processes: use a multiple of {world.size}")
    if config.sync_bn and world.distributed and device.type != "cuda":
        raise UserError("--sync-bn synchronises batch norm over GPUs (NCCL); on the CPU each process keeps "
                        "its own batch statistics: drop --sync-bn")
    seed_everything(config.seed)
    data = load_data(config.data, channels=config.channels, image_size=config.image_size, download=config.download)
    require_a_batch(data, batch_size=config.batch_size, world_size=world.size)
    log = to_stderr if world.is_main else lambda _: None
    if data.description:
        log(f"data: {data.description}")
    for note in notes:
        log(note)
    if not config.channels:  # from the data; said for image folders, where it is a finding
        config = config.replace(channels=data.images.shape[1])
        if data.mapped:
            kind = "in colour" if config.channels == 3 else "greyscale"
            log(f"channels: {config.channels} ({data.source} is {kind}; --channels converts)")
    last = str(run.last_checkpoint)
    if resume is not None:
        check_same_data(resume, len(data), last)
    taken = None if init_weights is None else config_from_dict(init_weights["config"], config.init_from)
    config = with_d_width(config, len(data), data.source, taken, log=log)
    config = with_classes(config, len(data.classes), data.source, flat=data.flat)
    config, data, prior = with_clusters(config, data, taken, log=log)
    batches = ShuffledBatches(data, batch_size=config.batch_size, seed=config.seed, device=device, rank=world.rank,
                              world_size=world.size, mirror=config.mirror)
    goal = total_steps(config, batches.batches_per_epoch)
    gan = build_gan(config, device, world)
    if init_weights is not None:  # before the clusters' sizes, which are the new data's
        start_from(gan, config, init_weights)
    require_batch_fits(config, gan.generator, gan.discriminator, device, data_size=len(data), world=world)
    if prior is not None:
        set_cluster_prior(gan, prior)
    if world.distributed:  # same networks from the shared seed; noise, dropout and augmentation differ per rank
        seed_everything(rank_seed(config.seed, world.rank))
    loop = TrainingLoop(config, gan, batches, run, goal=goal, stop=stop, device=device, world=world)
    if resume is not None:
        check_goal(resume, goal, last)
        loop.position = restore(gan, resume, last, world)
    gan.set_lr_scale(config, loop.position.lr_scale)
    return loop


def execution_line(config: TrainConfig, device: torch.device) -> str:
    """The log's line of how the run executes (the dcgan networks alone have layers that may run as products)."""
    return describe_execution(device, precision=config.precision, memory_format=config.memory_format,
                              convolutions=config.convolutions if config.arch == "dcgan" else None, r1=config.r1)


def with_d_width(config: TrainConfig, num_images: int, source: str, taken: TrainConfig | None, *,
                 log: Callable[[str], None]) -> TrainConfig:
    """A config whose D width is left to the data (0) with one: that of the run it starts from (`taken`, the
    `--init-from` run's config), or by the set's size."""
    if config.d_width:
        return config
    if taken is not None:  # the weights it starts from fix the width
        log(f"--d-width {taken.d_width}: the width of {config.init_from}'s discriminator")
        return config.replace(d_width=taken.d_width)
    width = d_width_for(config, num_images)
    if config.arch == "dcgan":
        log(f"--d-width {width}: {source} has {num_images} images ({SMALL_SET_D_WIDTH} for a set of at most "
            f"{SMALL_SET_IMAGES}, else {DEFAULT_D_WIDTH})")
    return config.replace(d_width=width)


class Clock:
    """Training time: the steps' wall-clock (evaluations excluded), the time limit, and images/s after warm-up.

    CUDA runs asynchronously, so the clock waits for the device only where a reading must be
    exact: at the end of the warm-up, when asked (log steps), and at the end.
    """

    def __init__(self, position: Position, *, time_limit_minutes: float, device: torch.device) -> None:
        self.device = device
        self.last = time.perf_counter()
        self.deadline = position.train_seconds + time_limit_minutes * 60 if time_limit_minutes else math.inf
        self.first_step = self.warm_step = position.step
        self.first_seconds = self.warm_seconds = position.train_seconds

    def tick(self, position: Position, *, sync: bool) -> None:
        """Add the time since the last tick to the position's training time."""
        warmed_up = position.step - self.first_step == WARMUP_STEPS
        now = synchronized_time(self.device) if sync or warmed_up else time.perf_counter()
        position.train_seconds += now - self.last
        self.last = now
        if warmed_up:
            self.warm_seconds, self.warm_step = position.train_seconds, position.step

    def expired(self, position: Position) -> bool:
        """Whether the run has used up its time limit."""
        return position.train_seconds >= self.deadline

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside (evaluations during training) does not count as training."""
        yield
        self.last = time.perf_counter()

    def images_per_s(self, position: Position, batch_size: int) -> float:
        """Throughput since the warm-up (or over the whole run when it ended no later)."""
        seconds, steps = position.train_seconds - self.warm_seconds, position.step - self.warm_step
        if steps == 0:
            seconds, steps = position.train_seconds - self.first_seconds, position.step - self.first_step
        return steps * batch_size / seconds if seconds > 0 and steps > 0 else 0.0


class Logger:
    """Mean losses over each window of steps, kept on the device and read only when a row is written.

    With several processes the row holds the mean over the ranks, and rank 0 alone writes it.
    With adaptive augmentation (`ada`) the row also holds its probability and last signal.
    """

    NAMES = ("d_loss", "g_loss", "d_real", "d_fake")
    ADA_NAMES = ("ada_p", "ada_signal")

    def __init__(self, run: RunDirectory, bar: tqdm, *, batch_size: int, device: torch.device,
                 world: World = World(), ada: AdaptiveAugment | None = None) -> None:
        self.world = world
        self.ada = ada
        self.rundir = run
        self.bar = bar
        self.batch_size = batch_size
        self.sums = torch.zeros(len(self.NAMES), device=device)
        self.count = 0
        self.window_seconds = 0.0

    def add(self, d_loss: torch.Tensor, d_real: torch.Tensor, d_fake: torch.Tensor, g_loss: torch.Tensor) -> None:
        """Add one step's (d_loss, D(x), D(G(z)), g_loss)."""
        self.sums += torch.stack((d_loss, g_loss, d_real, d_fake))
        self.count += 1

    def start_window(self, position: Position) -> None:
        """Forget the sums so far (after a roll-back, or once written)."""
        self.sums.zero_()
        self.count = 0
        self.window_seconds = position.train_seconds

    def write(self, position: Position, scores: dict[str, float]) -> None:
        """Append the window's means (and any scores) to metrics.csv; raise Diverged on a non-finite loss."""
        means = mean_over_ranks(self.world, self.sums / max(self.count, 1))
        if self.ada is not None:  # the same on every rank already
            means = torch.cat((means, self.ada.readings()))
        values = means.tolist()  # the only host sync
        losses = dict(zip(self.NAMES, values))
        ada = dict(zip(self.ADA_NAMES, values[len(self.NAMES):]))
        if not all(math.isfinite(v) for v in losses.values()):
            raise Diverged
        seconds = position.train_seconds - self.window_seconds
        images_per_s = self.count * self.batch_size / max(seconds, 1e-9)
        if self.world.is_main:
            self.rundir.log_metrics({"step": position.step, "epoch": position.epoch, **losses,
                                     "images_per_s": images_per_s, "wall_time": position.train_seconds, **ada,
                                     **scores})
        postfix = dict(d_loss=f"{losses['d_loss']:.3f}", g_loss=f"{losses['g_loss']:.3f}",
                       d_x=f"{losses['d_real']:.2f}", d_gz=f"{losses['d_fake']:.2f}", img_s=f"{images_per_s:.0f}")
        if ada:
            postfix["ada_p"] = f"{ada['ada_p']:.3f}"
        self.bar.set_postfix(**postfix)
        self.start_window(position)


class TrainingLoop:
    """Steps over the batches until the goal, the time limit or a signal, writing the run as it goes."""

    def __init__(self, config: TrainConfig, gan: GAN, batches: ShuffledBatches, run: RunDirectory, *,
                 goal: int | None, stop: StopRequest, device: torch.device, world: World = World()) -> None:
        self.config = config
        self.gan = gan
        self.world = world
        self.train_step = TrainingStep.from_config(gan, config, device, world)
        self.batches = batches
        self.rundir = run
        self.goal = goal  # None: until the time limit
        self.stop = stop
        self.position = Position()
        # The progress grids: the same noise (and labels) every time, drawn from the sampling generator.
        self.grid_noise = torch.randn(config.grid_size, config.latent_dim,
                                      generator=torch.Generator().manual_seed(config.seed + 1)).to(device)
        grid_labels = gan.sampler().sample_labels(config.grid_size, seed=config.seed + 1)
        self.grid_labels = None if grid_labels is None else grid_labels.to(device)

    def run(self, evaluator: Evaluator | None, *, progress: bool) -> TrainResult:
        """Train from `self.position` until the goal, the time limit or a signal; returns how the run ended."""
        self.start_meters(progress)
        status: Status = "completed" if self.reached_goal() else "running"
        batch_stream = self.batches_from_position()
        while status == "running":
            real, labels = next(batch_stream)
            self.logger.add(*self.train_step(self.as_format(real), labels))
            self.bar.update(1)
            self.clock.tick(self.position, sync=self.row_due() or self.reached_goal())
            status = self.stop_decision()
            scores = self.evaluate(evaluator, status)
            if not self.write_row_if_due(status, scores):
                status = self.roll_back(status)
                batch_stream = self.batches_from_position()
                continue
            self.save_outputs(status)
        return self.finish(status)

    def start_meters(self, progress: bool) -> None:
        """The progress bar, the clock and the logger of this run, from the position."""
        self.bar = tqdm(total=self.goal, initial=self.position.step, unit="step", disable=not progress,
                        dynamic_ncols=True)
        self.clock = Clock(self.position, time_limit_minutes=self.config.time_limit, device=self.batches.device)
        self.logger = Logger(self.rundir, self.bar, batch_size=self.batches.batch_size, device=self.batches.device,
                             world=self.world, ada=self.gan.ada)
        self.logger.start_window(self.position)

    def batches_from_position(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(real images, labels) from the position on, across epochs, moving the position past each batch drawn.

        The position points past the batch while it trains (at the next epoch after its last
        batch). A position that the run replaces (a roll-back) needs a new iterator.
        """
        position, per_epoch = self.position, self.batches.batches_per_epoch
        while True:
            if position.batch >= per_epoch:  # resumed at a world size whose epoch has no trailing batch
                position.epoch, position.batch = position.epoch + 1, 0
            for real, labels in self.batches.epoch(position.epoch, position.batch):
                position.step += 1
                position.batch += 1
                if position.batch == per_epoch:
                    position.epoch, position.batch = position.epoch + 1, 0
                yield real, labels

    def stop_decision(self) -> Status:
        """Whether the run goes on after this step, or how it ends (the same decision on every rank).

        Rank 0's clock decides the time limit; a signal to any rank stops them all at this step.
        """
        expired, signalled = any_rank(self.world, self.world.is_main and self.clock.expired(self.position),
                                      self.stop.signum is not None)
        if expired:
            return "time_limit"
        if signalled:
            return "interrupted"
        return "completed" if self.reached_goal() else "running"

    def evaluate(self, evaluator: Evaluator | None, status: Status) -> dict[str, float] | None:
        """The scores of an evaluation due at this step (every `--eval-every` steps and at the end), else None.

        Without an evaluator a due evaluation scores nothing ({}), but still closes a metrics row.
        """
        final = self.reached_goal() or status == "time_limit"  # not on a signal: the user wants out
        if not self.config.eval_every or not (self.due(self.config.eval_every) or final):
            return None
        if evaluator is None:
            return {}
        with self.clock.paused():
            return evaluator(self.gan.sampler(), self.position.step, final, self.payload)

    def row_due(self) -> bool:
        """Whether this step's number calls for a metrics row: every `--log-every` steps and at every checkpoint."""
        return self.due(self.config.log_every) or self.due(self.config.checkpoint_every)

    def write_row_if_due(self, status: Status, scores: dict[str, float] | None) -> bool:
        """Write this step's metrics row when one is due; False, writing nothing, when a loss or weight is not finite.

        A row is due every `--log-every` steps, at every checkpoint and evaluation, and at the end.
        """
        if not (self.row_due() or status != "running" or scores is not None):
            return True
        try:
            if not self.gan.finite_weights():  # a weight can break before any loss shows it
                raise Diverged
            self.logger.write(self.position, scores or {})
        except Diverged:
            return False
        return True

    def save_outputs(self, status: Status) -> None:
        """The progress grid every `--sample-every` steps; a checkpoint every `--checkpoint-every` and at the end."""
        if self.due(self.config.sample_every):
            self.save_samples()
        if status != "running" or self.due(self.config.checkpoint_every):
            self.save_checkpoint()

    def finish(self, status: Status) -> TrainResult:
        """Close the progress bar, draw the last step's grid if it has none, and say how the run ended."""
        self.bar.close()
        if self.world.is_main and not self.rundir.has_samples(self.position.step):
            self.save_samples()
        signum = self.stop.signum or (signal.SIGTERM if status == "interrupted" else None)  # another rank's signal
        return TrainResult(status, self.position.step,
                           self.clock.images_per_s(self.position, self.batches.batch_size), signum)

    def reached_goal(self) -> bool:
        """Whether the steps asked for are done (never, when only the time limit ends the run)."""
        return self.goal is not None and self.position.step >= self.goal

    def due(self, every: int) -> bool:
        """Whether something done every `every` steps (0: never) is due at this step."""
        return every > 0 and self.position.step % every == 0

    def as_format(self, images: torch.Tensor) -> torch.Tensor:
        """Real images in the networks' memory format."""
        return images.contiguous(memory_format=self.gan.memory_format)

    def payload(self, rng_by_rank: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The checkpoint payload of the current state (with every rank's random states, when given)."""
        return make_payload(self.config, self.gan, self.position, self.batches.images.shape[0],
                            world_size=self.world.size, rng_by_rank=rng_by_rank)

    def save_checkpoint(self) -> None:
        """Write checkpoints/last.pt (keeping `--keep-checkpoints` old ones); every rank takes part."""
        rng_by_rank = gather(self.world, capture_rng()) if self.world.distributed else None
        if self.world.is_main:
            save_checkpoint(self.payload(rng_by_rank), self.rundir.checkpoints, keep=self.config.keep_checkpoints)

    def save_samples(self) -> None:
        """Write the progress grid of this step (rank 0)."""
        if self.world.is_main:
            self.rundir.save_samples(self.gan.sampler(), self.grid_noise, self.position.step, labels=self.grid_labels)

    def roll_back(self, status: Status) -> Status:
        """After a non-finite loss or weight: reload the last checkpoint with half the learning rates, or give up.

        Returns the status after it: a run that was stopping (time limit, signal) stops at the
        checkpoint's step; one that reached its goal goes on from there.
        """
        position, last = self.position, self.rundir.last_checkpoint
        if position.rollbacks >= MAX_ROLLBACKS:
            raise UserError(f"training diverged (non-finite loss or weight near step {position.step}) after "
                            f"{MAX_ROLLBACKS} roll-backs with lower learning rates; the last good checkpoint "
                            f"is {last}")
        restored = restore(self.gan, from_main(self.world, lambda: load_checkpoint(last)), str(last), self.world)
        restored.rollbacks = position.rollbacks + 1
        restored.lr_scale = position.lr_scale * 0.5
        restored.train_seconds = position.train_seconds  # the discarded steps took time too
        self.gan.set_lr_scale(self.config, restored.lr_scale)
        self.position = restored
        self.bar.n = restored.step
        self.logger.start_window(restored)
        if self.world.is_main:
            self.rundir.truncate_metrics(restored.step)
            self.rundir.truncate_samples(restored.step)
            tqdm.write(f"non-finite loss or weight near step {position.step}: rolled back to step {restored.step} "
                       f"with learning rates x{restored.lr_scale:g}", file=sys.stderr)
        if status in ("time_limit", "interrupted"):
            return status
        return "completed" if self.reached_goal() else "running"
