"""Every command and Python snippet in README.md runs, in the README's order, in one fresh folder.

`fc-jax ...` commands run as `python -m fc_jax ...`; the default CIFAR-10 run and the `--recipe` runs
get a small subset and one epoch appended (`SHORTER`): the README's own figures come from `benchmarks/RESULTS.md`. Python
blocks run in one namespace, after the commands (they read the folders the commands wrote).
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SHORTER = [
    "--epochs",
    "1",
    "--num-training",
    "2000",
    "--num-validation",
    "200",
    "--num-test",
    "200",
]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def _commands() -> list[list[str]]:
    out = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0]  # drop a trailing comment
            for part in line.split("&&"):
                words = shlex.split(part)
                while words and "=" in words[0]:  # VAR=value before the command
                    words = words[1:]
                if words[:1] == ["fc-jax"]:
                    out.append(words[1:])
    return out


def test_the_readme_has_commands_and_snippets():
    commands = _commands()
    assert ["train"] in commands and any(c[:1] == ["sweep"] for c in commands)
    assert len(_blocks("python")) >= 3


@pytest.mark.slow
def test_readme_commands_and_snippets_run(tmp_path):
    from fc_jax.data.datasets import load_digits

    np.save(tmp_path / "images.npy", load_digits()[0][:20].reshape(20, 8, 8))
    env = {**os.environ, "MPLBACKEND": "Agg"}
    if env.get("FC_JAX_DATA_DIR"):  # the commands run in tmp_path: a relative folder must hold
        env["FC_JAX_DATA_DIR"] = str(Path(env["FC_JAX_DATA_DIR"]).resolve())
    for args in _commands():
        if args == ["train"]:  # the default CIFAR-10 recipe: a short stand-in
            args = [*args, *SHORTER, "--out", "runs/cifar10"]
        elif args[0] == "train" and "--recipe" in args:  # the longer recipes: the same
            args = [*args, *SHORTER]
        quiet = ["--quiet"] if args[0] in ("train", "sweep") else []
        cmd = [sys.executable, "-m", "fc_jax", *args, *quiet]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, (args, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr
    assert (tmp_path / "pred.npy").exists() and (tmp_path / "runs/digits/curves.png").exists()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace: dict = {}
        for block in _blocks("python"):
            exec(compile(block, str(README), "exec"), namespace)
    finally:
        os.chdir(cwd)
