"""A run's state: its position, the checkpoint payload, random-number states, and resuming a run.

A checkpoint holds everything a step depends on, so a resumed run continues bit for bit: the
networks, the optimisers, the moving average, adaptive augmentation's probability and signal
sums, LeCam's anchors, the position in the data (epoch and batch, whose order is a function of
the seed), the random-number states (every rank's, with several
processes), the learning-rate scale after roll-backs, and the training time used.

A new run may start from another run's weights (`--init-from`): its networks, not its state.
"""

from __future__ import annotations

import random
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import load_checkpoint
from ..config import TrainConfig, config_from_dict, flag, resumed_config
from ..data import batches_per_epoch
from ..errors import UserError, file_kind, path_mode, reason
from .distributed import World, rank_seed
from .rundir import RunDirectory
from .step import GAN

TRAINING_KEYS = ("discriminator", "opt_g", "opt_d", "epoch", "batch", "rng")
# The settings that shape G and D: a run started from another run's weights has the same.
NETWORK_SETTINGS = ("arch", "image_size", "channels", "latent_dim", "g_width", "d_width", "conditional", "num_classes",
                    "clusters", "spectral_norm")
# Those the data decides (channels when left at 0, the classes, fewer clusters for a small set): compared once
# it has loaded, as is D's width when left at 0.
SET_BY_THE_DATA = ("channels", "num_classes", "clusters")


@dataclass
class Position:
    """Where a run is: steps done, the epoch and batch of the next step, and what roll-backs changed."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    lr_scale: float = 1.0
    rollbacks: int = 0
    train_seconds: float = 0.0  # wall-clock spent training so far, evaluations during training excluded


def seed_everything(seed: int) -> None:
    """Seed torch, Python and NumPy: a run's initial weights and first steps follow from its seed."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # NumPy takes seeds below 2**32; a rank's seed (rank_seed) may be larger


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


def make_payload(config: TrainConfig, gan: GAN, position: Position, data_size: int, *, world_size: int = 1,
                 rng_by_rank: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything a checkpoint holds; `rng_by_rank`: every rank's random states, when there are several."""
    payload = {"config": config.to_dict(), **gan.state_dict(), "step": position.step, "epoch": position.epoch,
               "batch": position.batch, "lr_scale": position.lr_scale, "rollbacks": position.rollbacks,
               "train_seconds": position.train_seconds, "rng": capture_rng(), "data_size": data_size,
               "world_size": world_size}
    if rng_by_rank is not None and world_size > 1:
        payload["rng_by_rank"] = rng_by_rank
    return payload


def restore(gan: GAN, payload: dict[str, Any], source: str, world: World = World()) -> Position:
    """Load a checkpoint's weights, optimisers and RNG states; returns its position.

    At the world size that wrote it, every rank continues its own random streams exactly; at
    another, each rank starts a new stream from the seed and the step (not bit-identical).
    """
    try:
        gan.load_state_dict(payload)
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise UserError(f"{source}: checkpoint does not match this model's architecture ({reason(exc)})") from None
    try:
        if payload.get("world_size", 1) == world.size:
            restore_rng(payload["rng_by_rank"][world.rank] if world.distributed else payload["rng"])
        else:
            seed_everything(rank_seed(int(payload["config"]["seed"]) + payload["step"], world.rank))
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise UserError(f"{source}: damaged checkpoint (random-number states: {exc})") from None
    return Position(step=payload["step"], epoch=payload["epoch"], batch=payload["batch"],
                    lr_scale=payload.get("lr_scale", 1.0), rollbacks=payload.get("rollbacks", 0),
                    train_seconds=payload.get("train_seconds", 0.0))


def require_training_state(payload: dict[str, Any], path: str | Path) -> None:
    """Refuse to resume from a checkpoint that holds only a generator."""
    missing = [key for key in TRAINING_KEYS if key not in payload]
    if missing:
        raise UserError(f"{path}: checkpoint has no training state ({', '.join(missing)} missing); "
                        f"it can generate samples but cannot be resumed")


def load_resume_point(root: Path, flag_values: dict[str, Any], *, world_size: int = 1
                      ) -> tuple[TrainConfig, dict[str, Any]]:
    """The config and checkpoint payload to continue the run in `root` with, after the flags given.

    Refuses a path that is not a run directory, a run that never wrote a checkpoint, a checkpoint
    without training state, flags that would change the run's recipe, and a goal the run is already
    past: that last one from the checkpoint alone (its step and data size), before any data is loaded
    or clustered.
    """
    mode = path_mode(root, f"--resume {root}", missing="no such run directory")
    if not stat.S_ISDIR(mode):
        raise UserError(f"--resume {root}: not a run directory ({file_kind(mode)})")
    run = RunDirectory(root)
    if not (root / "config.toml").is_file() and not run.checkpoints.is_dir():
        raise UserError(f"--resume {root}: not a run directory of dcgan (neither config.toml nor checkpoints/ "
                        f"in it); name the folder that `dcgan train --out` wrote")
    last = run.last_checkpoint
    if (root / "config.toml").is_file() and not last.exists():
        raise UserError(f"--resume {root}: the run stopped before its first checkpoint; "
                        f"start it again with a new --out")
    payload = load_checkpoint(last)
    require_training_state(payload, last)
    stored = config_from_dict(payload["config"], str(last))
    config = resumed_config(stored, flag_values, str(root))
    data_size = payload.get("data_size")
    epoch = batches_per_epoch(data_size, config.batch_size, world_size) if data_size else 0
    if config.steps or epoch:  # --epochs needs the data's size (none in format 1) and batches: else checked later
        check_goal(payload, total_steps(config, epoch), str(last))
    return config, payload


def check_same_data(payload: dict[str, Any], data_size: int, source: str) -> None:
    """Refuse a resume on different data: the position (and any clusters) would point elsewhere."""
    stored = payload.get("data_size")
    if stored is not None and stored != data_size:
        raise UserError(f"{source}: the run was trained on {stored} images but the data now has {data_size}; "
                        f"exact resume needs the same data")


def check_goal(payload: dict[str, Any], goal: int | None, source: str) -> None:
    """Refuse a resume already past the total number of steps asked for (None: no total, a time limit)."""
    if goal is not None and payload["step"] > goal:
        raise UserError(f"{source}: the run is already at step {payload['step']}, past the {goal} steps asked "
                        f"for (--steps and --epochs name the run's total)")


def total_steps(config: TrainConfig, epoch_steps: int) -> int | None:
    """`--steps` when given, else `--epochs` whole epochs; None when only `--time-limit` ends the run."""
    if not config.steps and not config.epochs:
        return None
    return config.steps or config.epochs * epoch_steps


def load_start_point(config: TrainConfig) -> dict[str, Any]:
    """The checkpoint that `--init-from` names (a run directory or a checkpoint file), read and checked.

    Refuses in one line naming --init-from: nothing there, anything `load_checkpoint` refuses, a
    checkpoint without a discriminator, and one whose stored config makes other networks than
    `config` (but for the settings the data decides, and D's width left to it, which `start_from` compares
    once it has loaded).
    """
    source = config.init_from
    what = f"--init-from {source}"
    path_mode(source, what, missing="no such run directory or checkpoint")
    try:
        payload = load_checkpoint(source)
        stored = config_from_dict(payload["config"], source)
    except UserError as exc:
        raise UserError(f"{what}: {exc}") from None
    if "discriminator" not in payload:
        raise UserError(f"{what}: the checkpoint holds a generator only; a run starts from both networks (name a "
                        f"run directory or a checkpoint that `dcgan train` wrote)")
    later = (*SET_BY_THE_DATA, *(("d_width",) if not config.d_width else ()))
    require_same_networks(config, stored, source, settings=[name for name in NETWORK_SETTINGS if name not in later])
    return payload


def require_same_networks(config: TrainConfig, stored: TrainConfig, source: str,
                          settings: Sequence[str] = NETWORK_SETTINGS) -> None:
    """Refuse `--init-from` weights of networks other than `config`'s, naming every setting that differs."""
    different = [describe_difference(name, getattr(config, name), getattr(stored, name))
                 for name in settings if getattr(config, name) != getattr(stored, name)]
    if different:
        raise UserError(f"--init-from {source}: its networks differ from this run's: {', '.join(different)}")


def describe_difference(name: str, value: Any, stored: Any) -> str:
    """One setting of this run against the `--init-from` run's: `--latent-dim 8 (it has 16)`, `--conditional on (it
    has off)`, `5 classes in the data (it has 10)`."""
    if name == "num_classes":  # no flag: the data's classes
        return f"{value} classes in the data (it has {stored})"
    if isinstance(value, bool):
        value, stored = ("on" if v else "off" for v in (value, stored))
    return f"{flag(name)} {value} (it has {stored})"


def start_from(gan: GAN, config: TrainConfig, payload: dict[str, Any]) -> None:
    """Set a new run's networks to the weights of `--init-from`'s checkpoint `payload`: G, D and the moving average.

    The average starts from the checkpoint's when it has one, else from G, with a fresh count (its
    warm-up then follows the new data). The optimisers, D's running state (adaptive augmentation,
    LeCam) and the position stay those of a new run.
    """
    source = config.init_from
    require_same_networks(config, config_from_dict(payload["config"], source), source)
    try:
        gan.generator.load_state_dict(payload["generator"])
        gan.discriminator.load_state_dict(payload["discriminator"])
        if gan.ema is not None:
            average = payload.get("ema") or {"module": gan.generator.state_dict(), "own_statistics": True}
            gan.ema.load_state_dict({**average, "updates": 0})
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise UserError(f"--init-from {source}: its networks do not fit this run's ({reason(exc)})") from None
