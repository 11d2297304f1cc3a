"""Config precedence (defaults < preset < file < flags), validation and TOML round trip."""

import tomllib
from pathlib import Path

import pytest

from dcgan.config import TrainConfig, read_toml, resolve_config, resumed_config, to_toml
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


def test_toml_round_trip() -> None:
    config = TrainConfig(data='a "quoted" path', lr_d=3e-4, channels_last=True)
    assert TrainConfig(**tomllib.loads(to_toml(config))) == config


@pytest.mark.parametrize(("changes", "flag"), [
    ({"batch_size": 0}, "--batch-size"), ({"lr_d": -1.0}, "--lr-d"), ({"beta1": 1.0}, "--beta1"),
    ({"image_size": 30}, "--image-size"), ({"device": "tpu"}, "--device"), ({"epochs": 0}, "--epochs"),
    ({"channels": 2}, "--channels"), ({"time_limit": -1.0}, "--time-limit"),
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
