"""Checkpoints: atomic writes, and loading that refuses anything that is not ours.

A checkpoint is a dict of tensors and plain values, so `torch.load(..., weights_only=True)`
reads it without running any code from the file.
"""

from __future__ import annotations

import os
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import UserError

KIND = "dcgan-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("generator", "config", "step")


def fsync_directory(directory: Path) -> None:
    """Make a rename inside `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(payload: Any, path: str | Path) -> None:
    """torch.save to a temporary file, fsync, rename over `path`, fsync the folder.

    A crash at any moment leaves either the old file or the new one, never a partial one.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def save_checkpoint(payload: dict[str, Any], directory: str | Path, *, keep: int = 1) -> Path:
    """Write `directory/last.pt`, keeping the `keep - 1` previous ones as `step_<N>.pt`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    last = directory / "last.pt"
    if keep > 1 and last.exists():
        previous_step = _peek_step(last)
        if previous_step is not None and previous_step != payload["step"]:
            _link_or_copy(last, directory / f"step_{previous_step:08d}.pt")
    atomic_save({"kind": KIND, "format_version": FORMAT_VERSION, **payload}, last)
    history = sorted(directory.glob("step_*.pt"))
    for old in history[: max(0, len(history) - (keep - 1))]:
        old.unlink(missing_ok=True)
    return last


def _peek_step(path: Path) -> int | None:
    try:
        return int(torch.load(path, weights_only=True, map_location="cpu")["step"])
    except Exception:  # noqa: BLE001 - an unreadable old checkpoint is simply not kept
        return None


def _link_or_copy(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a dcgan checkpoint; anything else is refused with a UserError."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt" if (path / "checkpoints").is_dir() else path / "last.pt"
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "unsupported content"
        raise UserError(f"{path} is not a dcgan checkpoint: refused to load objects other than "
                        f"tensors and plain values ({reason})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path} is not a readable checkpoint: {exc}") from None
    if not isinstance(payload, dict) or payload.get("kind") != KIND:
        raise UserError(f"{path} is not a dcgan checkpoint")
    version = payload.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise UserError(f"{path}: invalid checkpoint format version {version!r}")
    if version > FORMAT_VERSION:
        raise UserError(f"{path} was written by a newer dcgan (checkpoint format {version}, this version "
                        f"reads up to {FORMAT_VERSION}): upgrade dcgan to load it")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise UserError(f"{path}: checkpoint is missing {', '.join(missing)}")
    return payload
