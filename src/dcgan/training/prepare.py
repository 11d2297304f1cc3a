"""The run-directory rules of `dcgan train`: a new run, a resumed run, or a restarted torchrun job's own run."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import FOLDER_MINUTES, FOLDER_PRESET, FOLDER_PRESET_WHY, TrainConfig, read_toml, resolve_config
from ..data import is_picture_source
from ..errors import UserError
from .distributed import World
from .lock import RunLock, refuse_if_held
from .rundir import RunDirectory, started_by
from .state import load_resume_point, load_start_point
from .tensorboard import require_tensorboard


@dataclass(frozen=True)
class PreparedRun:
    """What to train: the config, the checkpoint payload to continue from (None: a new run), the run directory,
    the checkpoint payload whose weights a new run starts from (`--init-from`; None: random weights), and
    the log's lines on choices made for the user, said once the data has loaded."""

    config: TrainConfig
    resume: dict[str, Any] | None
    root: Path
    init_weights: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()


def prepare_run(*, resume: str | None, out: str | None, config_file: str | None, flag_values: dict[str, Any],
                lock: RunLock, world: World = World(),
                check_evaluation: Callable[[TrainConfig], object] | None = None) -> PreparedRun:
    """The run `dcgan train` writes, locked by `lock` before anything in it is read or written (rank 0 only).

    `--resume` continues its run; otherwise a new run goes to `--out` (default `runs/<time>`),
    which must be new or empty, starting from the weights of `--init-from` when the config names
    it (read and checked before the run directory is made). Under torchrun, a restarted job
    (TORCHELASTIC_RESTART_COUNT > 0) continues the run it started in `--out` from its last
    checkpoint instead of refusing it.
    `check_evaluation` checks the `--eval-every` settings of a config that has them, so a wrong
    `--eval-classifier` fails before training starts.
    """
    continuing, init_weights, notes = False, None, ()
    if resume:
        if out or config_file:
            raise UserError("--resume takes its settings from the run: drop --out and --config")
        if "init_from" in flag_values:
            raise UserError("--init-from starts a new run from another run's weights; --resume continues a run "
                            "from its own checkpoint: use one or the other")
        root = Path(resume)
        if root.is_dir():  # else there is no run to lock, and loading its checkpoint says so
            lock.acquire(root, "--resume")
        config, payload = load_resume_point(root, flag_values, world_size=world.size)
    else:
        if flag_values.get("init_from") == "":  # an empty variable in a script: not a silent start from scratch
            raise UserError("--init-from: an empty path; name a run directory or a checkpoint file")
        default = f"torchrun-{world.run_id}" if world.run_id else time.strftime("%Y%m%d-%H%M%S")
        root = Path(out or Path("runs") / default)
        continuing = world.restart > 0 and started_by(root, world.run_id)  # our own run, before torchrun restarted us
        if continuing:  # its writer before the restart (our rank 0) is gone, and the lock with it
            lock.acquire(root, "--out")
        if continuing and RunDirectory(root).last_checkpoint.is_file():
            print(f"torchrun restart {world.restart}: continuing {root} from its last checkpoint", file=sys.stderr)
            config, payload = load_resume_point(root, flag_values, world_size=world.size)
        else:
            (config, notes), payload = new_config(read_toml(config_file) if config_file else {}, flag_values), None
            if not continuing:  # an --out in use is refused before anything else is checked or made
                refuse_if_held(root, "--out")
                RunDirectory.create(root)
            init_weights = load_start_point(config) if config.init_from else None
    if config.eval_every and check_evaluation is not None:
        check_evaluation(config)
    if config.tensorboard:  # also when a config file or the resumed run asks for it
        require_tensorboard()
    if not resume and not continuing:
        new_run_directory(root, lock)
    return PreparedRun(config, payload, root, init_weights, notes)


def new_config(file_values: dict[str, Any], flag_values: dict[str, Any]) -> tuple[TrainConfig, tuple[str, ...]]:
    """A new run's config, and what the log says of choices made for the user.

    For the user's own pictures (a folder or a .zip) the `folder` preset, measured better on colour
    pictures than `default`, the best on MNIST-like digits (docs/quality.md, "Your own pictures"),
    unless a flag or the config file names a preset; and, since one epoch of a few hundred pictures
    takes seconds, FOLDER_MINUTES of training unless the run's length is named.
    """
    data = flag_values.get("data") or file_values.get("data") or "mnist"
    if not is_picture_source(str(data)):
        return resolve_config(file_values, flag_values), ()
    named = flag_values.keys() | file_values.keys()
    notes = []
    if "preset" not in named:
        notes.append(f"preset: {FOLDER_PRESET} (the recipe measured best on colour pictures, {FOLDER_PRESET_WHY}; "
                     f"--preset names another)")
    if not {"epochs", "steps", "time_limit"} & named:
        flag_values = {**flag_values, "time_limit": FOLDER_MINUTES}
        notes.append(f"length: {FOLDER_MINUTES:g} minutes of training (--steps, --epochs or --time-limit name "
                     f"another)")
    preset = {} if "preset" in named else {"default_preset": FOLDER_PRESET}
    return resolve_config(file_values, flag_values, **preset), tuple(notes)


def new_run_directory(root: Path, lock: RunLock) -> None:
    """Make and lock `root` for a new run, then check again that it holds nothing but the lock file.

    Of two new runs started at once into the same folder, one takes the lock and the other is
    refused: by the lock, or by this check once the winner has written.
    """
    lock.acquire(root, "--out", create=True)
    RunDirectory.create(root)
