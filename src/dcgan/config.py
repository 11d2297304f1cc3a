"""Typed training configuration: defaults < preset < TOML file < command-line flags."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NoReturn

from .errors import UserError, file_kind

# The names of the choices; the modules that implement them are keyed by these names.
ARCHITECTURES = ("tutorial", "dcgan")  # networks.ARCHITECTURES
DCGAN_SIZES = (32, 64, 128, 256)  # the image sizes of the dcgan architecture
LOSSES = ("bce", "hinge", "lsgan")  # training.losses
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")
MEMORY_FORMATS = ("auto", "channels-last", "contiguous")  # device.resolve_memory_format
CONVOLUTIONS = ("auto", "native", "matmul")  # networks/matmul_conv.py, device.resolve_convolutions
LR_SCALINGS = ("none", "sqrt", "linear")
# `dcgan project`: the optimisation's steps by default, and at most (far past where the distance stops falling)
PROJECTION_STEPS, MAX_PROJECTION_STEPS = 300, 100_000

POSITIVE = ("image_size", "latent_dim", "batch_size", "log_every", "keep_checkpoints", "grid_size", "eval_samples",
            "d_steps", "g_width", "ada_speed")
NON_NEGATIVE = ("epochs", "steps", "sample_every", "checkpoint_every", "time_limit", "seed", "eval_every",
                "num_classes", "clusters", "d_width", "mode_seeking", "r1", "lecam", "freeze_d")
# Far beyond any useful run, yet low enough that a mistyped or hostile value (in a config file or a
# checkpoint's stored config) is refused before the networks or buffers it sizes are allocated.
UPPER_BOUNDS = {
    "latent_dim": 4096,  # 8x the largest noise in common use (512); the tutorial G holds 12,544 weights per unit
    "g_width": 512,  # 8x Radford et al.'s 64; layers widen to 16x it, so the weights grow with its square
    "d_width": 512,  # as g_width
    "batch_size": 2**20,  # no lower: a large-batch run splits the global batch over many GPUs
    "grid_size": 1024,  # a 32x32 grid; it is generated in one batch at every sample
    "eval_samples": 100_000,  # 10x the 10,000 of the usual FID; they are generated and held at once
    "num_classes": 10_000,  # 10x ImageNet's classes; G and the projection D hold a vector per class
    "clusters": 10_000,  # the clusters are the classes (as num_classes); k-means keeps an images x clusters table
    "d_steps": 100,  # 20x WGAN's 5; every D step takes a batch of its own
    "seed": 2**32 - 1,  # NumPy's seeds end here
}
# The tutorial's first layer is fully connected to maps of a quarter of the image size, so its
# weights grow with the size's square; the dcgan architecture's largest size is its limit too.
TUTORIAL_MAX_SIZE = max(DCGAN_SIZES)
TYPE_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}


def discriminator_block_count(arch: str, image_size: int) -> int:
    """The blocks of an architecture's D (a convolution with its norm and activation): the most `--freeze-d` takes.

    The tutorial's D has two; the dcgan D has one per halving of the image down to 4x4 maps.
    """
    return 2 if arch == "tutorial" else int(math.log2(image_size)) - 2


def toml_value(value: Any) -> str:
    """A value as a TOML file spells it: `true`, `"text"`, `0.001`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    return repr(value)


def describe_setting(problem: str, names: tuple[str, ...], values: Mapping[str, Any],
                     origins: Mapping[str, str]) -> str:
    """A message about the settings `names`: each named by its flag, or (when `origins` maps it to a
    file) as the file spells it, after the file's path.

    A `problem` without `{...}` is about one setting: `--x must be ..., got v` or `FILE: x = v: must
    be ...`; otherwise it names its settings as `{name}`, or `{name:value}` with the value.
    """
    if "{" not in problem:
        (name,) = names
        if name in origins:
            return f"{origins[name]}: {name} = {toml_value(values[name])}: {problem}"
        return f"{flag(name)} {problem}, got {values[name]!r}"
    text = problem.format_map({name: _Named(name, values[name], name in origins) for name in names})
    files = list(dict.fromkeys(origins[name] for name in names if name in origins))
    return f"{', '.join(files)}: {text}" if files else text


class InvalidSetting(UserError):
    """A value, or a combination of values, that TrainConfig refuses; its message names flags.

    `describe` names the settings that came from a file as the file spells them instead.
    """

    def __init__(self, problem: str, names: tuple[str, ...], values: Mapping[str, Any]) -> None:
        self.problem, self.names, self.values = problem, names, dict(values)
        super().__init__(describe_setting(problem, names, self.values, {}))

    def describe(self, origins: Mapping[str, str]) -> str:
        """The message, with `origins` mapping the settings that came from a file to that file's path."""
        return describe_setting(self.problem, self.names, self.values, origins)


@dataclass(frozen=True)
class _Named:
    """A setting in a message: `{name}` is its flag or its name in a file; `{name:value}` adds the value."""

    name: str
    value: Any
    from_file: bool

    def __format__(self, spec: str) -> str:
        if self.from_file:
            return f"{self.name} = {toml_value(self.value)}" if spec == "value" else self.name
        return f"{flag(self.name)} {self.value}" if spec == "value" else flag(self.name)


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
    d_width: int = 64  # dcgan: D's channels after its first layer (0: by the data's size, narrower on a small set)
    minibatch_std: bool = False  # dcgan: D sees how much the images of each group of 4 differ (Karras et al., 2018)
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
    ada_target: float = 0.0  # > 0: adaptive augmentation of D's inputs, its probability steered to this signal
    # Images for ADA's probability to go from 0 to 1. Karras et al.'s 500,000 suit GPU runs of
    # millions of images; the runs here see 60,000 to a few 100,000 (one to five epochs of MNIST),
    # in which the probability must be able to reach its level within the first epoch.
    ada_speed: int = 100_000
    ada_geometric: bool = False  # the adaptive augmentation also zooms, rotates and stretches
    ada_cutout: bool = False  # the adaptive augmentation also greys out a square of half the image's size
    mirror: bool = False  # each real image flipped left-right with probability 1/2 every time it is drawn
    lecam: float = 0.0  # > 0: weight of LeCam regularisation of D (Tseng et al., 2021)
    conditional: bool = False  # class-conditional G and projection D
    num_classes: int = 0  # set from the data when `conditional` (stored so checkpoints rebuild the model)
    clusters: int = 0  # > 0: train on this many k-means clusters of the images as pseudo-classes (no labels used)
    # the start: another run's weights (with fresh optimisers and position), and D's blocks kept as they start
    init_from: str = ""  # "": random weights; else the run directory or checkpoint whose G, D (and average) it takes
    freeze_d: int = 0  # D's first K blocks (a convolution with its norm and activation) are not trained
    # length: `steps` wins when set; `time_limit` (minutes) stops earlier, with a checkpoint; with both
    # `epochs` and `steps` 0, a run lasts until its `time_limit`
    epochs: int = 1
    steps: int = 0
    time_limit: float = 0.0
    # execution
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # bf16 autocast where the hardware runs it natively, else fp32
    memory_format: str = "auto"  # auto: channels-last where it was measured faster (bf16 on a CPU with AMX)
    convolutions: str = "auto"  # matmul: layers next to 4x4 maps partly as matrix products; auto: where measured faster
    reuse_fake: bool = False  # the G step reuses the D step's generated batch (one G forward, not two)
    lr_scaling: str = "none"  # large batches: scale learning rates by batch/32 (linear) or its root (sqrt)
    sync_bn: bool = False  # several GPUs: G's batch norm uses the statistics of the global batch
    # outputs
    log_every: int = 50
    sample_every: int = 250
    checkpoint_every: int = 1000
    keep_checkpoints: int = 1
    grid_size: int = 64
    tensorboard: bool = False  # also write metrics.csv's rows and the sample grids as TensorBoard events
    # evaluation during training (`--eval-every`): FID etc. in metrics.csv, fid.png, checkpoints/best.pt
    eval_every: int = 0
    eval_samples: int = 2000
    eval_classifier: str = ""
    eval_reference: str = ""  # the real images scored against ("": the training data, its test split where it has one)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise InvalidSetting (a UserError) naming the setting at fault when a value is out of range."""
        for name in POSITIVE:
            if getattr(self, name) <= 0:
                self._refuse("must be positive", name)
        for name in NON_NEGATIVE:
            if getattr(self, name) < 0:
                self._refuse("must not be negative", name)
        for name, most in UPPER_BOUNDS.items():
            if getattr(self, name) > most:
                self._refuse(f"must be at most {most}", name)
        for name in ("lr_d", "lr_g"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                self._refuse("must be a positive number", name)
        for name in ("beta1", "beta2", "ema_decay"):
            if not 0 <= getattr(self, name) < 1:
                self._refuse("must be in [0, 1)", name)
        for name in ("mode_seeking", "r1", "lecam", "time_limit"):
            if not math.isfinite(getattr(self, name)):
                self._refuse("must be a finite number", name)
        if not 0 <= self.ada_target < 1:
            self._refuse("must be in [0, 1) (0: off; 0.6 is Karras et al.'s target)", "ada_target")
        for name in ("ada_geometric", "ada_cutout"):
            if getattr(self, name) and not self.ada_target:
                self._refuse(f"{{{name}}} adds operations to the adaptive augmentation: it needs {{ada_target}} "
                             "above 0", name, "ada_target")
        if self.augment and self.ada_target:
            self._refuse("{augment} and {ada_target} exclude each other: both augment D's inputs (at a fixed "
                         "strength, and at one adapted to D's overfitting); choose one", "augment", "ada_target")
        if self.clusters == 1:
            self._refuse("must be 0 (off) or at least 2", "clusters")
        if self.clusters and self.conditional:
            self._refuse("{clusters} and {conditional} exclude each other: {conditional} uses the data's labels, "
                         "{clusters} replaces them with k-means clusters", "clusters", "conditional")
        if self.mismatched_labels and not (self.conditional or self.clusters):
            self._refuse("{mismatched_labels} needs labels to mismatch: add --conditional or --clusters K",
                         "mismatched_labels")
        if self.mode_seeking and self.reuse_fake:
            self._refuse("{mode_seeking} compares the D step's generated batch with the G step's, "
                         "so it cannot be used with {reuse_fake} (one batch for both)", "mode_seeking", "reuse_fake")
        if self.convolutions == "matmul" and self.r1:
            self._refuse("{convolutions:value}: {r1} differentiates D twice, which only PyTorch's own convolutions "
                         "do (use native)", "convolutions", "r1")
        if self.loss not in LOSSES:
            self._refuse(f"must be one of {', '.join(LOSSES)}", "loss")
        if self.epochs == 0 and self.steps == 0 and self.time_limit == 0:
            self._refuse("{epochs} and {steps} are both 0 and there is no {time_limit}: nothing to train",
                         "epochs", "steps", "time_limit")
        if self.arch == "dcgan" and self.image_size not in DCGAN_SIZES:
            self._refuse(f"{{image_size:value}}: the dcgan architecture makes images of "
                         f"{', '.join(map(str, DCGAN_SIZES))} pixels", "image_size", "arch")
        if self.arch == "tutorial" and self.image_size % 4:
            self._refuse("must be a multiple of 4", "image_size")
        if self.arch == "tutorial" and self.image_size > TUTORIAL_MAX_SIZE:
            self._refuse(f"must be at most {TUTORIAL_MAX_SIZE} with the tutorial architecture", "image_size")
        if self.arch == "tutorial" and self.minibatch_std:
            self._refuse("is an option of the dcgan architecture (add --arch dcgan)", "minibatch_std")
        if self.arch == "tutorial" and (self.g_width != 64 or self.d_width not in (0, 64)):
            self._refuse("{g_width} and {d_width} set the dcgan architecture's widths; the tutorial's are "
                         "fixed (add --arch dcgan)", "g_width", "d_width", "arch")
        if self.channels not in (0, 1, 3):
            self._refuse("must be 1 or 3 (or 0: from the data)", "channels")
        if self.batch_size < 2:
            self._refuse("must be at least 2 (batch norm needs 2 samples)", "batch_size")
        for name, choices in (("device", DEVICES), ("precision", PRECISIONS), ("memory_format", MEMORY_FORMATS),
                              ("convolutions", CONVOLUTIONS),
                              ("lr_scaling", LR_SCALINGS), ("arch", ARCHITECTURES), ("preset", PRESETS)):
            if getattr(self, name) not in choices:
                self._refuse(f"must be one of {', '.join(choices)}", name)
        blocks = discriminator_block_count(self.arch, self.image_size)
        if self.freeze_d > blocks:
            self._refuse(f"must be at most {blocks} (the blocks of the {self.arch} discriminator at "
                         f"{self.image_size}x{self.image_size} pixels)", "freeze_d")

    def _refuse(self, problem: str, *names: str) -> NoReturn:
        raise InvalidSetting(problem, names, vars(self))

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict (TOML- and checkpoint-friendly)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


# A preset sets hyper-parameters only; execution options (device, precision, output) stay the user's.
TUTORIAL = dict(latent_dim=16, batch_size=32, lr_d=1e-3, lr_g=2e-4, beta1=0.5, beta2=0.999, loss="bce",
                spectral_norm=False, ema_decay=0.0, d_steps=1, r1=0.0, augment=False, conditional=False, clusters=0,
                mode_seeking=0.0, mode_seeking_pairs=False, mismatched_labels=False, ada_target=0.0,
                ada_geometric=False, ada_cutout=False, mirror=False, lecam=0.0, minibatch_std=False)
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
# Your own pictures: `default`'s recipe with Radford et al.'s networks at 64x64, adaptive augmentation,
# 64-dimensional noise and mode seeking at 1.5. At ten minutes of training on a 2-core CPU (three
# seeds, two colour sets, docs/quality.md, "Your own pictures"), it scores a third of `default`'s FID
# at 32x32 and under a tenth of `dcgan`'s; at five minutes or less, `--image-size 32` draws more in
# the time. The augmentation keeps a few hundred pictures from being learnt by heart, and stays off
# while D does not overfit; wider noise than MNIST's 16 and twice the mode seeking cover more of a
# varied set (recall 0.34 and 0.26 against 0.25 and 0.19, at a lower FID). Its target, 0.45 rather
# than the paper's 0.6, together with twice the clusters on a folder of about a thousand pictures
# (training/labels.py), gives recall 0.42 to 0.46 at twenty minutes where 0.6 gave 0.36 to 0.40.
# D's width is left to the data: half Radford et al.'s on a set of at most 500 pictures (networks/).
PRESETS["folder"] = {**PRESETS["default"], "arch": "dcgan", "image_size": 64, "latent_dim": 64, "mode_seeking": 1.5,
                     "ada_target": 0.45, "d_width": 0}
DEFAULT_PRESET = "default"  # used when neither a flag nor a config file names one
FOLDER_PRESET = "folder"  # used instead when --data is the user's own pictures (a folder or a .zip)
FOLDER_PRESET_WHY = ("a third of --preset default's FID at 32x32 and under a tenth of --preset dcgan's in ten "
                     "minutes on two colour sets, docs/quality.md")
FOLDER_MINUTES = 20.0  # a folder run's length when none is named: one epoch of a few hundred pictures is seconds

FIELD_TYPES = {f.name: f.type for f in fields(TrainConfig)}


def flag(name: str) -> str:
    """The command-line flag of a config field: `lr_d` -> `--lr-d`."""
    return "--" + name.replace("_", "-")


class FileValues(dict):
    """Settings read from a config file, which remember the file so that messages can name it."""

    def __init__(self, values: Mapping[str, Any], path: str) -> None:
        super().__init__(values)
        self.path = path


def _coerce(name: str, value: Any, origin: str) -> Any:
    """Check a value read from a file against the field's type (ints are accepted for floats)."""
    expected = {"int": int, "float": float, "str": str, "bool": bool}[FIELD_TYPES[name]]
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not expected:
        raise UserError(f"{origin}: {name} = {toml_value(value)}: must be {TYPE_NAMES[FIELD_TYPES[name]]}")
    return value


def _upgrade(values: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """Settings written by earlier versions in today's terms: `channels_last = true/false` is `memory_format`."""
    values = dict(values)
    if "channels_last" in values:
        old = values.pop("channels_last")
        if type(old) is not bool:
            raise UserError(f"{origin}: channels_last = {toml_value(old)}: must be true or false")
        values.setdefault("memory_format", "channels-last" if old else "contiguous")
    return values


def read_toml(path: str | Path) -> FileValues:
    """Read a config file into a dict of known, type-checked fields."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):  # a device or a pipe might never stop giving bytes
            raise UserError(f"config file {path} is {file_kind(mode)}, not a regular file")
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path} is not valid TOML: {exc}") from None
    raw = _upgrade(raw, str(path))
    unknown = sorted(set(raw) - set(FIELD_TYPES))
    if unknown:
        raise UserError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    return FileValues({name: _coerce(name, value, str(path)) for name, value in raw.items()}, str(path))


def resolve_config(file_values: Mapping[str, Any] | None = None, flag_values: Mapping[str, Any] | None = None,
                   *, default_preset: str = DEFAULT_PRESET) -> TrainConfig:
    """Merge defaults, the chosen preset (`default_preset` when neither names one), a config file's values and
    flags (later wins).

    A value refused names its flag, or the file (from `read_toml`) and the setting as the file spells it.
    """
    path = file_values.path if isinstance(file_values, FileValues) else None
    file_values, flag_values = dict(file_values or {}), dict(flag_values or {})
    origins = {name: path for name in file_values.keys() - flag_values.keys()} if path else {}
    preset = flag_values.get("preset") or file_values.get("preset") or default_preset
    if preset not in PRESETS:
        raise UserError(describe_setting(f"must be one of {', '.join(PRESETS)}", ("preset",), {"preset": preset},
                                         origins))
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
        raise UserError(describe_setting(f"{{reuse_fake}}: the {preset} preset's mode-seeking term compares two "
                                         f"generated batches; add --mode-seeking 0 to use one batch",
                                         ("reuse_fake",), merged, origins))
    try:
        return TrainConfig(**merged)
    except InvalidSetting as exc:
        raise UserError(exc.describe(origins)) from None


def until_time_limit(chosen: set[str] | dict[str, Any]) -> bool:
    """Whether a run's length is named by --time-limit alone: then it trains until the time runs out."""
    return "time_limit" in chosen and not {"epochs", "steps"} & set(chosen)


# Options that may change when a run is resumed; the others are the run's recipe, fixed by its checkpoint.
RESUMABLE = frozenset({"steps", "epochs", "time_limit", "device", "sync_bn", "log_every", "sample_every",
                       "checkpoint_every", "keep_checkpoints", "tensorboard", "eval_every", "eval_samples",
                       "eval_classifier", "eval_reference"})


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
    try:
        return stored.replace(**changes)
    except InvalidSetting as exc:  # the flags name themselves; the rest is the run's
        raise UserError(exc.describe({name: origin for name in FIELD_TYPES if name not in changes})) from None


def config_from_dict(values: Mapping[str, Any], origin: str) -> TrainConfig:
    """Rebuild a config stored in a checkpoint, ignoring fields this version does not know.

    A value refused names `origin` (the checkpoint) and the setting as stored.
    """
    known = {k: _coerce(k, v, origin) for k, v in _upgrade(values, origin).items() if k in FIELD_TYPES}
    try:
        return TrainConfig(**known)
    except InvalidSetting as exc:
        raise UserError(exc.describe(dict.fromkeys(FIELD_TYPES, origin))) from None


def to_toml(config: TrainConfig) -> str:
    """Serialise a config as TOML (flat scalars only, so a tiny writer is enough)."""
    return "".join(f"{name} = {toml_value(value)}\n" for name, value in config.to_dict().items())
