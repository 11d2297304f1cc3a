"""Config precedence (defaults < preset < file < flags), validation and TOML round trip."""

import os
import tomllib
from pathlib import Path

import pytest

from dcgan.config import (UPPER_BOUNDS, TrainConfig, config_from_dict, read_toml, resolve_config, resumed_config,
                          to_toml)
from dcgan.errors import UserError


def test_tutorial_preset_has_the_tutorials_hyper_parameters() -> None:
    config = resolve_config({}, {"preset": "tutorial"})
    assert config.preset == "tutorial"
    assert (config.latent_dim, config.batch_size, config.lr_d, config.lr_g) == (16, 32, 1e-3, 2e-4)
    assert (config.beta1, config.beta2) == (0.5, 0.999)
    assert (config.loss, config.spectral_norm, config.ema_decay, config.d_steps, config.augment,
            config.conditional) == ("bce", False, 0.0, 1, False, False)


def test_the_default_preset_is_used_when_none_is_named() -> None:
    assert resolve_config().preset == "default"
    assert resolve_config({"seed": 2}).preset == "default"
    default, tutorial = resolve_config(), resolve_config({}, {"preset": "tutorial"})
    recipe = ("ema_decay", "clusters", "mode_seeking", "mode_seeking_pairs", "lr_g", "lr_d")
    assert [getattr(default, name) for name in recipe] == [0.999, 50, 0.75, True, 1.6e-3, 5e-4]
    assert {k: v for k, v in default.to_dict().items() if k not in ("preset", *recipe)} == \
        {k: v for k, v in tutorial.to_dict().items() if k not in ("preset", *recipe)}


def test_the_conditional_preset_is_the_tutorial_with_labels_an_average_and_variety_terms() -> None:
    conditional, tutorial = resolve_config({}, {"preset": "conditional"}), resolve_config({}, {"preset": "tutorial"})
    assert conditional.to_dict() == {**tutorial.to_dict(), "preset": "conditional", "conditional": True,
                                     "ema_decay": 0.999, "mode_seeking": 1.25, "mode_seeking_pairs": True,
                                     "mismatched_labels": True, "lr_d": 5e-4}


def test_labels_replace_the_default_presets_clusters_unless_clusters_are_asked_for() -> None:
    assert resolve_config({}, {"conditional": True}).clusters == 0
    with pytest.raises(UserError, match="--clusters and --conditional exclude each other"):
        resolve_config({}, {"conditional": True, "clusters": 10})


def test_reuse_fake_with_the_default_preset_asks_to_turn_mode_seeking_off() -> None:
    with pytest.raises(UserError, match="add --mode-seeking 0"):
        resolve_config({}, {"reuse_fake": True})
    assert resolve_config({}, {"reuse_fake": True, "mode_seeking": 0.0}).reuse_fake
    assert resolve_config({}, {"reuse_fake": True, "preset": "tutorial"}).mode_seeking == 0


def test_flags_override_file_which_overrides_preset(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('batch_size = 64\nlr_g = 1\nseed = 3\n')
    config = resolve_config(read_toml(path), {"batch_size": 128})
    assert config.batch_size == 128  # flag wins
    assert config.lr_g == 1.0 and isinstance(config.lr_g, float)  # file wins over preset, int accepted
    assert config.seed == 3


@pytest.mark.parametrize(("stored", "memory_format"), [(True, "channels-last"), (False, "contiguous")])
def test_channels_last_of_earlier_versions_is_read_as_its_memory_format(tmp_path: Path, stored: bool,
                                                                        memory_format: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"channels_last = {str(stored).lower()}\nseed = 2\n")
    assert resolve_config(read_toml(path)).memory_format == memory_format
    assert config_from_dict({"channels_last": stored, "seed": 2}, "runs/a/last.pt").memory_format == memory_format
    path.write_text("channels_last = 1\n")
    with pytest.raises(UserError, match=f"{path}: channels_last = 1: must be true or false"):
        read_toml(path)


def test_toml_round_trip() -> None:
    config = TrainConfig(data='a "quoted" path', lr_d=3e-4, memory_format="channels-last")
    assert TrainConfig(**tomllib.loads(to_toml(config))) == config


@pytest.mark.parametrize(("changes", "flag"), [
    ({"batch_size": 0}, "--batch-size"), ({"lr_d": -1.0}, "--lr-d"), ({"beta1": 1.0}, "--beta1"),
    ({"image_size": 30}, "--image-size"), ({"device": "tpu"}, "--device"), ({"epochs": 0}, "--epochs"),
    ({"channels": 2}, "--channels"), ({"time_limit": -1.0}, "--time-limit"),
    ({"memory_format": "nhwc"}, "--memory-format"), ({"convolutions": "fast"}, "--convolutions"),
    ({"convolutions": "matmul", "r1": 1.0}, "--convolutions matmul: --r1"),
])
def test_invalid_values_name_the_option(changes: dict, flag: str) -> None:
    with pytest.raises(UserError, match=flag):
        TrainConfig(**changes)


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        TrainConfig().batch_size = 3  # type: ignore[misc]


def test_a_time_limit_alone_means_train_until_it_runs_out() -> None:
    alone = resolve_config({}, {"time_limit": 5.0})
    assert (alone.epochs, alone.steps, alone.time_limit) == (0, 0, 5.0)
    assert resolve_config({"time_limit": 5.0}).steps == 0 and resolve_config({"time_limit": 5.0}).epochs == 0
    with_epochs = resolve_config({"epochs": 3}, {"time_limit": 5.0})
    assert (with_epochs.epochs, with_epochs.steps) == (3, 0)
    assert resolve_config({}, {"time_limit": 5.0, "steps": 100}).steps == 100
    assert resolve_config().epochs == 1  # no limit of any kind: one epoch
    with pytest.raises(UserError, match="nothing to train"):
        TrainConfig(epochs=0, steps=0)


def test_a_resumed_run_accepts_its_own_recipe_and_names_both_values_of_a_change() -> None:
    stored = resolve_config({}, {"preset": "tutorial", "seed": 3, "steps": 100})
    same = resumed_config(stored, {"preset": "tutorial", "seed": 3, "data": "mnist", "steps": 200}, "runs/a")
    assert same == stored.replace(steps=200)
    with pytest.raises(UserError) as refused:
        resumed_config(stored, {"preset": "tutorial", "seed": 4, "lr_g": 2e-4}, "runs/a")
    assert str(refused.value) == ("--resume runs/a: a resumed run keeps its recipe; cannot change --seed 4 "
                                  "(the run has 3)")
    assert resumed_config(stored, {"epochs": 2}, "runs/a").steps == 0  # --epochs alone replaces --steps
    until = resumed_config(stored, {"time_limit": 1.5}, "runs/a")
    assert (until.epochs, until.steps, until.time_limit) == (0, 0, 1.5)


# ---------------------------------------------------------------------------------------------
# Messages name where a value came from: a flag, a config file, a checkpoint
# ---------------------------------------------------------------------------------------------

def refused(file_text: str | None, flags: dict, tmp_path: Path) -> str:
    """The message with which resolve_config refuses a config file's text (None: no file) and flags."""
    path = tmp_path / "c.toml"
    if file_text is not None:
        path.write_text(file_text)
    with pytest.raises(UserError) as info:
        resolve_config(read_toml(path) if file_text is not None else {}, flags)
    return str(info.value)


def test_a_bad_value_names_the_file_and_the_setting_as_the_file_spells_it(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    assert refused("lr_g = -1\n", {}, tmp_path) == f"{path}: lr_g = -1.0: must be a positive number"
    assert refused('device = "tpu"\n', {}, tmp_path) == (f'{path}: device = "tpu": must be one of auto, cpu, '
                                                         f'cuda, mps')
    assert refused('preset = "huge"\n', {}, tmp_path) == (f'{path}: preset = "huge": must be one of tutorial, '
                                                          f'dcgan, default, conditional, folder')


def test_a_bad_flag_names_the_flag_even_over_a_file(tmp_path: Path) -> None:
    assert refused(None, {"lr_g": -1.0}, tmp_path) == "--lr-g must be a positive number, got -1.0"
    assert refused("lr_g = 0.001\n", {"lr_g": -1.0}, tmp_path) == "--lr-g must be a positive number, got -1.0"


def test_settings_that_exclude_each_other_are_named_where_they_came_from(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    both_in_file = refused("conditional = true\nclusters = 3\n", {}, tmp_path)
    assert both_in_file.startswith(f"{path}: clusters and conditional exclude each other: conditional uses")
    mixed = refused("clusters = 3\n", {"conditional": True}, tmp_path)
    assert mixed.startswith(f"{path}: clusters and --conditional exclude each other: --conditional uses")
    flags = refused(None, {"clusters": 3, "conditional": True}, tmp_path)
    assert flags.startswith("--clusters and --conditional exclude each other")
    assert refused("reuse_fake = true\n", {}, tmp_path) == (
        f"{path}: reuse_fake: the default preset's mode-seeking term compares two generated batches; "
        f"add --mode-seeking 0 to use one batch")
    assert refused('arch = "dcgan"\nimage_size = 30\n', {}, tmp_path) == (
        f"{path}: image_size = 30: the dcgan architecture makes images of 32, 64, 128, 256 pixels")


@pytest.mark.parametrize(("text", "expected"), [
    ('batch_size = "32"', 'batch_size = "32": must be an integer'),
    ("batch_size = 32.0", "batch_size = 32.0: must be an integer"),
    ('lr_g = "fast"', 'lr_g = "fast": must be a number'), ("augment = 1", "augment = 1: must be true or false"),
    ("data = 3", "data = 3: must be a string"), ("seed = true", "seed = true: must be an integer"),
])
def test_a_wrong_type_in_a_file_says_what_the_setting_must_be(tmp_path: Path, text: str, expected: str) -> None:
    assert refused(text + "\n", {}, tmp_path) == f"{tmp_path / 'c.toml'}: {expected}"


def test_a_checkpoints_stored_config_names_the_checkpoint() -> None:
    with pytest.raises(UserError, match=r"^runs/a/last\.pt: latent_dim = 1000000000: must be at most 4096$"):
        config_from_dict({"latent_dim": 10**9}, "runs/a/last.pt")
    with pytest.raises(UserError, match=r'^runs/a/last\.pt: seed = "x": must be an integer$'):
        config_from_dict({"seed": "x"}, "runs/a/last.pt")


def test_a_resumed_runs_flags_name_themselves() -> None:
    stored = resolve_config({}, {"preset": "tutorial", "steps": 100})
    with pytest.raises(UserError, match=r"^--eval-samples must be at most 100000, got 1000000$"):
        resumed_config(stored, {"eval_samples": 10**6}, "runs/a")


@pytest.mark.parametrize("special", ["/dev/zero", "fifo", "folder"])
def test_a_config_path_that_is_no_regular_file_is_refused_before_reading(tmp_path: Path, special: str) -> None:
    os.mkfifo(tmp_path / "fifo")  # reading it would wait for a writer; /dev/zero would never end
    (tmp_path / "folder").mkdir()
    path = Path(special) if special.startswith("/") else tmp_path / special
    kind = {"/dev/zero": "a character device", "fifo": "a named pipe", "folder": "a folder"}[special]
    with pytest.raises(UserError) as info:
        read_toml(path)
    assert str(info.value) == f"config file {path} is {kind}, not a regular file"


# ---------------------------------------------------------------------------------------------
# Upper bounds
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(UPPER_BOUNDS))
def test_sizes_are_accepted_up_to_their_bound_and_refused_past_it(name: str) -> None:
    context = {"arch": "dcgan", "image_size": 64} if name in ("g_width", "d_width") else {}
    bound = UPPER_BOUNDS[name]
    assert getattr(TrainConfig(**context, **{name: bound}), name) == bound
    with pytest.raises(UserError) as info:
        TrainConfig(**context, **{name: bound + 1})
    assert str(info.value) == f"--{name.replace('_', '-')} must be at most {bound}, got {bound + 1}"


def test_the_tutorial_architectures_image_size_is_bounded() -> None:
    assert TrainConfig(image_size=256).image_size == 256
    with pytest.raises(UserError, match="--image-size must be at most 256 with the tutorial architecture, got 260"):
        TrainConfig(image_size=260)
    with pytest.raises(UserError, match="--time-limit must be a finite number, got inf"):
        TrainConfig(time_limit=float("inf"))

