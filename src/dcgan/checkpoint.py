"""Checkpoints: atomic writes, and loading that refuses anything that is not ours.

A checkpoint is a dict of tensors and plain values, so `torch.load(..., weights_only=True)`
reads it without running any code from the file.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import stat
import warnings
from pathlib import Path
from typing import Any

import torch

from .errors import UserError, file_kind
from .files import atomic_write, remove_temporaries, temporary_path

KIND = "dcgan-checkpoint"
# Format history: 1 = the first release; 2 adds `data_size` (images in the training set), so that
# a resume on different data is refused instead of continuing from a shifted position; 3 may hold
# `ema` (the generator's moving average, which sampling uses) and conditional models, which a
# version-2 reader would misread.
FORMAT_VERSION = 3
REQUIRED_KEYS = ("generator", "config", "step")


def atomic_save(payload: Any, path: str | Path) -> None:
    """torch.save `payload` to `path` atomically: a crash leaves the old file or the new one, never a partial one."""
    buffer = io.BytesIO()  # serialise first: a full disk then fails as a plain OSError on write

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            handle.write(buffer.getbuffer())

    torch.save(payload, buffer)
    atomic_write(path, write)


def write_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write one checkpoint file atomically, stamped with our kind and format version.

    A failed write (full disk, read-only folder) is a UserError, and the file is left as it was.
    """
    path = Path(path)
    try:
        atomic_save({"kind": KIND, "format_version": FORMAT_VERSION, **payload}, path)
    except OSError as exc:
        raise UserError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from None
    return path


def save_checkpoint(payload: dict[str, Any], directory: str | Path, *, keep: int = 1) -> Path:
    """Write `directory/last.pt`, keeping the `keep - 1` previous ones as `step_<N>.pt`.

    A failed write (full disk, read-only folder) is a UserError, and `last.pt` is left as it was.
    """
    directory = Path(directory)
    last = directory / "last.pt"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        remove_temporaries(directory)
        if keep > 1 and last.exists():
            previous_step = _peek_step(last)
            if previous_step is not None and previous_step != payload["step"]:
                _link_or_copy(last, directory / f"step_{previous_step:08d}.pt")
        write_checkpoint(payload, last)
        history = sorted(directory.glob("step_*.pt"))
        for old in history[: max(0, len(history) - (keep - 1))]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write checkpoint {last}: {exc.strerror or exc}") from None
    return last


def _peek_step(path: Path) -> int | None:
    try:
        # Memory-mapped: only the few bytes of `step` are read, not every tensor of the file.
        return int(torch.load(path, weights_only=True, map_location="cpu", mmap=True)["step"])
    except Exception:  # noqa: BLE001 - an unreadable old checkpoint is simply not kept
        return None


def _link_or_copy(source: Path, target: Path) -> None:
    if target.exists() and os.path.samefile(source, target):
        return  # kept already, by a run killed after the link: renaming onto a link of itself is a no-op
    tmp = temporary_path(target)
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a dcgan checkpoint; anything else is refused with a one-line UserError."""
    path = Path(path)
    mode = _mode(path)
    if mode is not None and stat.S_ISDIR(mode):
        folder = path
        checkpoints = _mode(folder / "checkpoints")
        if checkpoints is not None and stat.S_ISDIR(checkpoints):  # a run directory
            path = folder / "checkpoints" / "last.pt"
        elif _mode(folder / "last.pt") is not None:  # a run's checkpoints folder
            path = folder / "last.pt"
        else:
            raise UserError(f"{folder}: a folder that is not a run directory (no checkpoints/last.pt or last.pt "
                            f"in it); name a checkpoint file or a run directory")
        mode = _mode(path)
    if mode is None:
        raise UserError(f"checkpoint not found: {path}")
    if not stat.S_ISREG(mode):  # a device or a pipe might never stop giving bytes
        raise UserError(f"{path} is {file_kind(mode)}, not a regular file: name a checkpoint file or a run directory")
    payload = _read(path, map_location)
    if not isinstance(payload, dict) or payload.get("kind") != KIND:
        raise UserError(f"{path} is not a dcgan checkpoint")
    version = payload.get("format_version")
    if type(version) is not int or version < 1:
        raise UserError(f"{path}: invalid checkpoint format version {version!r}")
    if version > FORMAT_VERSION:
        raise UserError(f"{path} was written by a newer dcgan (checkpoint format {version}, this version "
                        f"reads up to {FORMAT_VERSION}): upgrade dcgan to load it")
    _check_fields(payload, path)
    return _upgrade(payload)


def _mode(path: Path) -> int | None:
    """The file type and permission bits of `path` (following links), None when it does not exist."""
    try:
        return os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:  # no permission to look; a NUL byte in the name
        raise UserError(f"cannot read checkpoint {path}: {getattr(exc, 'strerror', None) or exc}") from None


def _read(path: Path, map_location: str | torch.device) -> Any:
    """torch.load with weights_only=True: only tensors and plain values, never code from the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols: not the user's concern
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        code = [line.strip() for line in str(exc).splitlines() if "GLOBAL" in line]
        if code:
            raise UserError(f"{path} is not a dcgan checkpoint: refused to load it because it asks to "
                            f"run code ({code[0]})") from None
        raise UserError(f"{path} is not a readable checkpoint (not a PyTorch file, or truncated)") from None
    except OSError as exc:
        raise UserError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    except Exception:  # noqa: BLE001 - whatever the parser trips on, the file is not usable
        raise UserError(f"{path} is not a readable checkpoint (not a PyTorch file, or truncated)") from None


def _check_fields(payload: dict[str, Any], path: Path) -> None:
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise UserError(f"{path}: checkpoint is missing {', '.join(missing)}")
    step = payload["step"]
    if not isinstance(payload["config"], dict) or not isinstance(payload["generator"], dict):
        raise UserError(f"{path}: damaged checkpoint (config and generator must be tables)")
    if type(step) is not int or step < 0:
        raise UserError(f"{path}: damaged checkpoint (step must be a non-negative integer, got {step!r})")


def _upgrade(payload: dict[str, Any]) -> dict[str, Any]:
    """Bring an older checkpoint format up to FORMAT_VERSION, one version at a time."""
    if payload["format_version"] == 1:
        payload = {**payload, "format_version": 2, "data_size": None}  # unknown: the data check is skipped
    if payload["format_version"] == 2:
        payload = {**payload, "format_version": 3}  # nothing to add: no EMA, not conditional
    return payload
