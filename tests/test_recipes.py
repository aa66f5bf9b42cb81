"""Tests for the named recipes (`fc_jax.settings.RECIPES`, `fc-jax train --recipe NAME`)."""

import json
import shlex

import pytest

from fc_jax import cli, settings
from fc_jax.cli import flags
from fc_jax.workdir.folders import train_command
from tests.helpers import real_cifar10_dir


@pytest.mark.parametrize("name", list(settings.RECIPES))
def test_each_recipe_is_valid_settings_and_flags_override_its_values(name):
    s = settings.settings("cifar10", {"recipe": name})
    assert s["recipe"] == name
    for k, v in settings.RECIPES[name].values.items():
        assert s[k] == v, k
    t = settings.settings("cifar10", {"recipe": name, "learning_rate": 1e-4, "epochs": 2})
    assert (t["learning_rate"], t["epochs"]) == (1e-4, 2)
    assert {k: v for k, v in t.items() if k not in ("learning_rate", "epochs")} == {
        k: v for k, v in s.items() if k not in ("learning_rate", "epochs")
    }


def test_the_default_recipe_is_the_dataset_defaults():
    assert settings.settings("cifar10", {}) == settings.settings("cifar10", {"recipe": "default"})
    assert settings.RECIPES["default"].values == {}


def test_recipes_differ_from_the_default_and_are_refused_for_digits_or_unknown():
    for name in ("cpu-10min", "cpu-1h", "gpu"):
        assert settings.RECIPES[name].values, name
    with pytest.raises(ValueError, match="--recipe cpu-10min is a CIFAR-10 recipe; drop --dataset"):
        settings.settings("digits", {"recipe": "cpu-10min"})
    with pytest.raises(ValueError, match="unknown recipe 'fast'"):
        settings.settings("cifar10", {"recipe": "fast"})
    assert settings.settings("digits", {"recipe": "default"})["hidden_dims"] == [128]


@pytest.mark.parametrize("name", ["default", "cpu-1h"])
def test_train_command_names_the_recipe_and_only_what_differs_from_it(name):
    s = settings.settings("cifar10", {"recipe": name, "seed": 3})
    words = shlex.split(train_command(s, "/tmp/x"))
    assert ("--recipe" in words) == (name != "default")
    assert words[words.index("--seed") + 1] == "3"
    assert "--hidden-dims" not in words  # the recipe's own width is not repeated
    args = cli.build_parser().parse_args(words[1:])
    given = flags.given(args, cli.train.SETTING_NAMES)
    assert settings.settings(given.get("dataset", "cifar10"), given) == s


def test_help_lists_each_recipe_with_what_it_reaches(capsys):
    assert cli.main(["train", "--help"]) == 0
    out = "".join(capsys.readouterr().out.split())  # argparse wraps lines, hyphens included
    for name, r in settings.RECIPES.items():
        assert "".join(f"{name}: {r.reaches}".split()) in out


# Slow tier: each loads the whole CIFAR-10 and the gpu net writes a 0.5 GB checkpoint (30 s here).
@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpu", "cpu-1h"])
def test_a_recipe_trains_one_short_epoch_on_cpu_and_resume_keeps_it(name, tmp_path, capsys):
    """The GPU recipe is unmeasured without a GPU; it must still run here (one short epoch)."""
    out = tmp_path / "run"
    small = ["--num-training", "400", "--num-validation", "100", "--num-test", "100"]
    argv = ["train", "--recipe", name, "--epochs", "1", "--batch-size", "100", *small]
    data = ["--data-dir", str(real_cifar10_dir())]
    assert cli.main([*argv, *data, "--out", str(out), "--quiet"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["epochs"] == 1 and 0 <= line["test_acc"] <= 1
    saved = json.loads((out / "history.json").read_text())["settings"]
    assert saved["recipe"] == name
    assert saved["hidden_dims"] == settings.RECIPES[name].values["hidden_dims"]
    assert cli.main(["train", "--resume", str(out), "--recipe", "default"]) == 2
    assert f"--recipe 'default' (checkpoint: '{name}')" in capsys.readouterr().err
