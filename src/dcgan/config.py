"""Typed training configuration: defaults < preset < TOML file < command-line flags."""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import UserError

# The names of the choices; the modules that implement them are keyed by these names.
ARCHITECTURES = ("tutorial", "dcgan")  # networks.ARCHITECTURES
DCGAN_SIZES = (32, 64, 128, 256)  # the image sizes of the dcgan architecture
LOSSES = ("bce", "hinge", "lsgan")  # training.losses
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")
LR_SCALINGS = ("none", "sqrt", "linear")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; written to `config.toml` in the run directory."""

    preset: str = "tutorial"
    # data
    data: str = "mnist"
    download: bool = False
    image_size: int = 28
    channels: int = 0  # 0: from the data (1 for greyscale sources, 3 for a folder of colour images)
    # model
    arch: str = "tutorial"  # the network family (networks/): the tutorial's, or Radford et al.'s dcgan
    latent_dim: int = 16
    g_width: int = 64  # dcgan: G's channels at half the image size (doubling as the maps halve)
    d_width: int = 64  # dcgan: D's channels after its first layer
    # optimisation (the tutorial's values)
    batch_size: int = 32
    lr_d: float = 1e-3
    lr_g: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    # recipe options beyond the tutorial; these defaults are the tutorial's behaviour
    loss: str = "bce"  # bce (the tutorial's), hinge or lsgan: see losses.py
    spectral_norm: bool = False  # spectral normalisation of D's layers
    ema_decay: float = 0.0  # > 0: keep an exponential moving average of G's weights, used for sampling
    mode_seeking: float = 0.0  # > 0: weight of the mode-seeking term (Mao et al., 2019) in G's loss
    mode_seeking_pairs: bool = False  # the term per pair of samples (pushes hardest on the most alike) vs per batch
    mismatched_labels: bool = False  # labelled GANs: D also learns that real images with a wrong label are fake
    d_steps: int = 1  # discriminator steps per generator step
    r1: float = 0.0  # > 0: weight gamma of the R1 penalty, gamma/2 * E|grad_x D(x)|^2 on real images
    augment: bool = False  # differentiable translation + cutout of D's inputs
    conditional: bool = False  # class-conditional G and projection D
    num_classes: int = 0  # set from the data when `conditional` (stored so checkpoints rebuild the model)
    clusters: int = 0  # > 0: train on this many k-means clusters of the images as pseudo-classes (no labels used)
    # length: `steps` wins when set; `time_limit` (minutes) stops earlier, with a checkpoint; with both
    # `epochs` and `steps` 0, a run lasts until its `time_limit`
    epochs: int = 1
    steps: int = 0
    time_limit: float = 0.0
    # execution
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # bf16 autocast where the hardware runs it natively, else fp32
    channels_last: bool = False
    reuse_fake: bool = False  # the G step reuses the D step's generated batch (one G forward, not two)
    lr_scaling: str = "none"  # large batches: scale learning rates by batch/32 (linear) or its root (sqrt)
    sync_bn: bool = False  # several GPUs: G's batch norm uses the statistics of the global batch
    # outputs
    log_every: int = 50
    sample_every: int = 250
    checkpoint_every: int = 1000
    keep_checkpoints: int = 1
    grid_size: int = 64
    # evaluation during training (`--eval-every`): FID etc. in metrics.csv, fid.png, checkpoints/best.pt
    eval_every: int = 0
    eval_samples: int = 2000
    eval_classifier: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise UserError naming the option at fault when a value is out of range."""
        positive = ("image_size", "latent_dim", "batch_size", "log_every", "keep_checkpoints",
                    "grid_size", "eval_samples", "d_steps", "g_width", "d_width")
        non_negative = ("epochs", "steps", "sample_every", "checkpoint_every", "time_limit", "seed", "eval_every",
                        "num_classes", "clusters", "mode_seeking", "r1")
        for name in positive:
            if getattr(self, name) <= 0:
                raise UserError(f"{flag(name)} must be positive, got {getattr(self, name)}")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise UserError(f"{flag(name)} must not be negative, got {getattr(self, name)}")
        for name in ("lr_d", "lr_g"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise UserError(f"{flag(name)} must be a positive number, got {value}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"{flag(name)} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise UserError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        for name in ("mode_seeking", "r1"):
            if not math.isfinite(getattr(self, name)):
                raise UserError(f"{flag(name)} must be a finite number, got {getattr(self, name)}")
        if self.clusters == 1:
            raise UserError("--clusters must be 0 (off) or at least 2, got 1")
        if self.clusters and self.conditional:
            raise UserError("--clusters and --conditional exclude each other: --conditional uses the data's labels, "
                            "--clusters replaces them with k-means clusters")
        if self.mismatched_labels and not (self.conditional or self.clusters):
            raise UserError("--mismatched-labels needs labels to mismatch: add --conditional or --clusters K")
        if self.mode_seeking and self.reuse_fake:
            raise UserError("--mode-seeking compares the D step's generated batch with the G step's, "
                            "so it cannot be used with --reuse-fake (one batch for both)")
        if self.loss not in LOSSES:
            raise UserError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.epochs == 0 and self.steps == 0 and self.time_limit == 0:
            raise UserError("--epochs and --steps are both 0 and there is no --time-limit: nothing to train")
        if self.arch == "dcgan" and self.image_size not in DCGAN_SIZES:
            raise UserError(f"--image-size {self.image_size}: the dcgan architecture makes images of "
                            f"{', '.join(map(str, DCGAN_SIZES))} pixels")
        if self.arch == "tutorial" and self.image_size % 4:
            raise UserError(f"--image-size must be a multiple of 4, got {self.image_size}")
        if self.arch == "tutorial" and (self.g_width, self.d_width) != (64, 64):
            raise UserError("--g-width and --d-width set the dcgan architecture's widths; the tutorial's are "
                            "fixed (add --arch dcgan)")
        if self.channels not in (0, 1, 3):
            raise UserError(f"--channels must be 1 or 3 (or 0: from the data), got {self.channels}")
        if self.batch_size < 2:
            raise UserError(f"--batch-size must be at least 2 (batch norm needs 2 samples), got {self.batch_size}")
        if self.device not in DEVICES:
            raise UserError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.lr_scaling not in LR_SCALINGS:
            raise UserError(f"--lr-scaling must be one of {', '.join(LR_SCALINGS)}, got {self.lr_scaling!r}")
        if self.arch not in ARCHITECTURES:
            raise UserError(f"--arch must be one of {', '.join(ARCHITECTURES)}, got {self.arch!r}")
        if self.preset not in PRESETS:
            raise UserError(f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict (TOML- and checkpoint-friendly)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


# A preset sets hyper-parameters only; execution options (device, precision, output) stay the user's.
TUTORIAL = dict(latent_dim=16, batch_size=32, lr_d=1e-3, lr_g=2e-4, beta1=0.5, beta2=0.999, loss="bce",
                spectral_norm=False, ema_decay=0.0, d_steps=1, r1=0.0, augment=False, conditional=False, clusters=0,
                mode_seeking=0.0, mode_seeking_pairs=False, mismatched_labels=False)
# `default` and `conditional` are the best recipes measured so far (docs/quality.md has the numbers).
PRESETS: dict[str, dict[str, Any]] = {
    "tutorial": TUTORIAL,
    # Radford et al.'s architecture and recipe, as the reference PyTorch DCGAN example runs it (whose
    # G step reuses the D step's generated batch)
    "dcgan": {**TUTORIAL, "arch": "dcgan", "image_size": 64, "latent_dim": 100, "batch_size": 128, "lr_d": 2e-4,
              "lr_g": 2e-4, "reuse_fake": True},
    "default": {**TUTORIAL, "ema_decay": 0.999, "clusters": 50, "mode_seeking": 0.75, "mode_seeking_pairs": True,
                "lr_g": 1.6e-3, "lr_d": 5e-4},
    "conditional": {**TUTORIAL, "ema_decay": 0.999, "conditional": True, "mode_seeking": 1.25,
                    "mode_seeking_pairs": True, "mismatched_labels": True, "lr_d": 5e-4},
}
DEFAULT_PRESET = "default"  # used when neither a flag nor a config file names one

FIELD_TYPES = {f.name: f.type for f in fields(TrainConfig)}


def flag(name: str) -> str:
    """The command-line flag of a config field: `lr_d` -> `--lr-d`."""
    return "--" + name.replace("_", "-")


def _coerce(name: str, value: Any, origin: str) -> Any:
    """Check a value read from a file against the field's type (ints are accepted for floats)."""
    expected = {"int": int, "float": float, "str": str, "bool": bool}[FIELD_TYPES[name]]
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not expected:
        raise UserError(f"{origin}: '{name}' must be a {expected.__name__}, got {value!r}")
    return value


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a config file into a dict of known, type-checked fields."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - set(FIELD_TYPES))
    if unknown:
        raise UserError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    return {name: _coerce(name, value, str(path)) for name, value in raw.items()}


def resolve_config(file_values: dict[str, Any] | None = None, flag_values: dict[str, Any] | None = None
                   ) -> TrainConfig:
    """Merge defaults, the chosen preset, a config file's values and flags (later wins)."""
    file_values, flag_values = dict(file_values or {}), dict(flag_values or {})
    preset = flag_values.get("preset") or file_values.get("preset") or DEFAULT_PRESET
    if preset not in PRESETS:
        raise UserError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    merged = {**PRESETS[preset], **file_values, **flag_values, "preset": preset}
    chosen = file_values.keys() | flag_values.keys()
    if until_time_limit(chosen):
        merged.update(epochs=0, steps=0)
    if merged.get("arch") == "dcgan" and "image_size" not in merged:
        merged["image_size"] = 64  # the architecture's own size; the tutorial's 28 is not one of its sizes
    if merged.get("conditional") and "clusters" not in chosen:
        merged["clusters"] = 0  # the data's labels take the place of the preset's clusters
    if merged.get("reuse_fake") and merged.get("mode_seeking") and "reuse_fake" not in chosen:
        merged["reuse_fake"] = False  # the preset's one-batch step gives way to the mode-seeking term asked for
    if merged.get("reuse_fake") and merged.get("mode_seeking") and "mode_seeking" not in chosen:
        raise UserError(f"--reuse-fake: the {preset} preset's mode-seeking term compares two generated batches; "
                        f"add --mode-seeking 0 to use one batch")
    return TrainConfig(**merged)


def until_time_limit(chosen: set[str] | dict[str, Any]) -> bool:
    """Whether a run's length is named by --time-limit alone: then it trains until the time runs out."""
    return "time_limit" in chosen and not {"epochs", "steps"} & set(chosen)


# Options that may change when a run is resumed; the others are the run's recipe, fixed by its checkpoint.
RESUMABLE = frozenset({"steps", "epochs", "time_limit", "device", "sync_bn", "log_every", "sample_every",
                       "checkpoint_every", "keep_checkpoints", "eval_every", "eval_samples", "eval_classifier"})


def resumed_config(stored: TrainConfig, flag_values: dict[str, Any], origin: str) -> TrainConfig:
    """A resumed run's config: the run's own, with the flags that may change (RESUMABLE) applied.

    A recipe flag equal to the run's value is accepted; a different one is refused in one line
    naming both values. `--epochs` alone replaces the run's `--steps`, `--time-limit` alone both.
    """
    changed = [f"{flag(name)} {flag_values[name]!r} (the run has {getattr(stored, name)!r})"
               for name in sorted(set(flag_values) - RESUMABLE) if flag_values[name] != getattr(stored, name)]
    if changed:
        raise UserError(f"--resume {origin}: a resumed run keeps its recipe; cannot change {', '.join(changed)}")
    changes = {name: value for name, value in flag_values.items() if name in RESUMABLE}
    if until_time_limit(changes):
        changes.update(epochs=0, steps=0)
    elif "epochs" in changes and "steps" not in changes:
        changes["steps"] = 0
    return stored.replace(**changes)


def config_from_dict(values: dict[str, Any], origin: str) -> TrainConfig:
    """Rebuild a config stored in a checkpoint, ignoring fields this version does not know."""
    known = {k: _coerce(k, v, origin) for k, v in values.items() if k in FIELD_TYPES}
    return TrainConfig(**known)


def to_toml(config: TrainConfig) -> str:
    """Serialise a config as TOML (flat scalars only, so a tiny writer is enough)."""
    lines = []
    for name, value in config.to_dict().items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = json.dumps(value)  # a JSON string is a valid TOML basic string
        else:
            text = repr(value)
        lines.append(f"{name} = {text}")
    return "\n".join(lines) + "\n"
