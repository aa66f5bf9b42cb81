"""fc_jax.cli end to end: train, exact resume, divergence, bad input, numpy backend, gradcheck."""

import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fc_jax import cli, layers, settings
from fc_jax.data.datasets import get_dataset
from fc_jax.reference.fc_net import FullyConnectedNet
from fc_jax.storage.checkpoint import load_run

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FC_JAX_DATA_DIR") or REPO.parent / "shared" / "data")
HAVE_CIFAR = any((DATA / sub / "data_batch_1").exists() for sub in ("", "cifar-10-batches-py"))
SMALL_DIGITS = "--dataset digits --num-training 300 --num-validation 100 --num-test 100".split()
FILES = {
    "checkpoint.npz",
    "history.json",
    "history.csv",
    "curves.png",
    "best_params.npz",
    "model.npz",
}


class _FakeTTY(io.StringIO):
    def isatty(self):
        return True


def _train(capsys, *argv):
    """Run `fc-jax train argv`; returns (exit code, stdout lines, stderr)."""
    code = cli.main(["train", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def _result(lines):
    """The final JSON line, checking it is the only JSON line."""
    json_lines = [ln for ln in lines if ln.startswith("{")]
    assert json_lines == [lines[-1]]
    return json.loads(lines[-1])


def _files(folder):
    """The files a user sees in `folder` (the lock file `.lock` is hidden)."""
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")}


def _npz(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.slow
def test_train_digits_end_to_end(tmp_path, capsys, monkeypatch):
    tty = _FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    out = tmp_path / "run"
    code, lines, _ = _train(capsys, "--dataset", "digits", "--epochs", 10, "--out", out)
    assert code == 0
    res = _result(lines)
    assert set(res) == {
        "dataset",
        "test_acc",
        "best_val_acc",
        "train_seconds",
        "compile_seconds",
        "epochs",
        "out_dir",
        "device",
    }
    assert res["dataset"] == "digits" and res["epochs"] == 10 and res["out_dir"] == str(out)
    assert res["device"] == str(jax.devices()[0]) and res["train_seconds"] > 0
    assert res["test_acc"] > 0.9 and res["best_val_acc"] > 0.9
    assert sum(ln.startswith("(Epoch ") for ln in lines) == 10
    assert "[##############################] " in tty.getvalue()  # the bar on a TTY
    assert _files(out) == FILES
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hist = json.loads((out / "history.json").read_text())
    assert len(hist["history"]["val_acc"]) == 10 and hist["test_acc"] == res["test_acc"]
    assert max(hist["history"]["val_acc"]) == res["best_val_acc"]
    rows = [r.split(",") for r in (out / "history.csv").read_text().splitlines()]
    assert rows[0] == ["epoch", "loss", "train_acc", "val_acc", "lr", "seconds"] and len(rows) == 11
    assert [float(r[3]) for r in rows[1:]] == pytest.approx(hist["history"]["val_acc"], rel=1e-6)
    assert load_run(out)[0].epoch == 10

    # The reported test accuracy, recomputed from best_params.npz by the numpy reference net.
    params = _npz(out / "best_params.npz")
    model = FullyConnectedNet(
        settings.DEFAULTS["digits"]["hidden_dims"], input_dim=64, dtype=np.float64
    )
    model.params = {k: v.astype(np.float64) for k, v in params.items()}
    data = get_dataset("digits", dtype=np.float64)
    acc = np.mean(np.argmax(model.loss(data["X_test"]), axis=1) == data["y_test"])
    assert abs(acc - res["test_acc"]) <= 1 / 300 + 1e-6


@pytest.mark.skipif(not HAVE_CIFAR, reason=f"CIFAR-10 is not in {DATA}")
@pytest.mark.slow
def test_train_cifar10_subset(tmp_path, capsys):
    out = tmp_path / "c"
    sizes = "--num-training 500 --num-validation 100 --num-test 100 --batch-size 50".split()
    argv = ["--data-dir", DATA, *sizes, "--hidden-dims", 32, "--epochs", 2, "--out", out]
    code, lines, err = _train(capsys, *argv)
    assert code == 0, err
    res = _result(lines)
    assert res["dataset"] == "cifar10" and res["epochs"] == 2
    assert res["test_acc"] > 0.18  # chance is 0.10
    assert _files(out) == FILES
    assert _npz(out / "best_params.npz")["W1"].shape == (3072, 32)


@pytest.mark.parametrize(
    "extra",
    [
        "--hidden-dims 32",
        "--hidden-dims 32 16 --keep-prob 0.8 --normalization batchnorm --sampling permutation",
    ],
    ids=["plain", "dropout-batchnorm"],
)
@pytest.mark.slow
def test_resume_is_bit_identical(tmp_path, capsys, extra):
    a, b = tmp_path / "straight", tmp_path / "resumed"
    args = [*SMALL_DIGITS, "--batch-size", 50, *extra.split(), "--quiet"]
    assert _train(capsys, *args, "--epochs", 4, "--out", a)[0] == 0
    assert _train(capsys, *args, "--epochs", 2, "--out", b)[0] == 0
    before = {p.name: p.read_bytes() for p in b.iterdir() if p.name != ".lock"}

    # Conflicting flags are refused before anything changes.
    code, _, err = _train(capsys, "--resume", b, "--hidden-dims", 64, "--epochs", 4)
    assert code == 2 and "--hidden-dims [64] (checkpoint: [32" in err
    assert {p.name: p.read_bytes() for p in b.iterdir() if p.name != ".lock"} == before

    code, lines, err = _train(capsys, "--resume", b, "--epochs", 4, "--quiet")
    assert code == 0, err
    assert [ln.split(")")[0] for ln in lines if ln.startswith("(Epoch")] == [
        "(Epoch 3 / 4",
        "(Epoch 4 / 4",
    ]
    assert _result(lines)["epochs"] == 4
    best_a, best_b = _npz(a / "best_params.npz"), _npz(b / "best_params.npz")
    assert best_a.keys() == best_b.keys()
    assert all(np.array_equal(best_a[k], best_b[k]) for k in best_a)
    ck_a, ck_b = _npz(a / "checkpoint.npz"), _npz(b / "checkpoint.npz")
    assert ck_a.keys() == ck_b.keys()
    assert [k for k in ck_a if not np.array_equal(ck_a[k], ck_b[k])] == ["meta"]  # timings differ
    hist_a = json.loads((a / "history.json").read_text())["history"]
    hist_b = json.loads((b / "history.json").read_text())["history"]
    assert hist_a["loss"] == hist_b["loss"] and hist_a["val_acc"] == hist_b["val_acc"]


@pytest.mark.slow
def test_divergence_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stderr", _FakeTTY())
    # One step per epoch with a huge learning rate: finite for a few epochs, then inf/nan.
    args = (
        "--dataset digits --update-rule sgd --learning-rate 1e6 --num-training 64 "
        "--batch-size 64 --hidden-dims 32 --weight-scale 0.1 --quiet"
    ).split()
    out = tmp_path / "div"
    code, lines, _ = _train(capsys, *args, "--epochs", 10, "--out", out)
    err = sys.stderr.getvalue()
    assert code == 3
    m = re.search(r"non-finite at epoch (\d+), step (\d+)", err)
    assert m and err.startswith("error: training diverged") and "[#" not in err
    epoch = int(m.group(1))
    assert epoch >= 2 and int(m.group(2)) == 1
    assert not any(ln.startswith("{") for ln in lines)
    assert _files(out) == {"checkpoint.npz"}
    run, _ = load_run(out)
    assert run.epoch == epoch - 1 and not bool(run.ts.diverged)
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(run.ts.params))
    # The kept checkpoint is exactly that of a run stopped before the divergence.
    ref = tmp_path / "ref"
    assert _train(capsys, *args, "--epochs", epoch - 1, "--out", ref)[0] == 0
    ck, ck_ref = _npz(out / "checkpoint.npz"), _npz(ref / "checkpoint.npz")
    assert all(np.array_equal(ck[k], ck_ref[k]) for k in ck if k != "meta")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "digits", "--keep-prob", 1.5], "keep_prob"),
        (["--dataset", "digits", "--learning-rate", -1], "learning_rate"),
        (["--dataset", "digits", "--update-rule", "nesterov"], "invalid choice: 'nesterov'"),
        (["--dataset", "digits", "--epochs", 0], "expected an integer >= 1, got 0"),
        (["--dataset", "digits", "--num-training", 5000], "too many"),
        (["--dataset", "mnist"], "invalid choice: 'mnist'"),
        (["--data-dir", "{tmp}/no-such-dir"], "no-such-dir"),
        (["--resume", "{tmp}"], "no checkpoint at"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    argv = [str(a).replace("{tmp}", str(tmp_path)) for a in argv]
    if "--resume" not in argv:
        argv += ["--out", str(out)]
    code, lines, err = _train(capsys, *argv)
    assert code == 2
    assert message in err
    assert not out.exists() and not any(ln.startswith("{") for ln in lines)


def test_numpy_backend_on_digits(tmp_path, capsys):
    out = tmp_path / "np"
    code, lines, err = _train(
        capsys, "--dataset", "digits", "--backend", "numpy", "--epochs", 5, "--out", out
    )
    assert code == 0, err
    res = _result(lines)
    assert res["device"] == "numpy (host CPU)" and res["epochs"] == 5 and res["test_acc"] > 0.8
    assert _files(out) == FILES - {"checkpoint.npz"}


@pytest.mark.slow
def test_gradcheck_passes(capsys):
    assert cli.main(["gradcheck"]) == 0
    lines = capsys.readouterr().out.splitlines()
    res = json.loads(lines[-1])
    assert res["passed"] is True
    names = {
        "affine",
        "affine_t",
        "relu",
        "affine_relu",
        "batchnorm",
        "batchnorm_backward",
        "layernorm",
        "dropout",
        "softmax_loss",
        "svm_loss",
        "net_plain",
        "net_batchnorm",
        "net_layernorm",
    }
    assert set(res["gradcheck"]) == names
    assert all(e <= (1e-6 if k.startswith("net") else 1e-7) for k, e in res["gradcheck"].items())


@pytest.mark.slow
def test_gradcheck_catches_a_wrong_backward(capsys, monkeypatch):
    bad_relu = jax.custom_vjp(lambda x: jnp.maximum(x, 0))
    bad_relu.defvjp(lambda x: (jnp.maximum(x, 0), None), lambda _, g: (g,))  # forgets the mask
    monkeypatch.setattr(layers, "relu", bad_relu)
    assert cli.main(["gradcheck"]) == 1
    out = capsys.readouterr().out
    res = json.loads(out.splitlines()[-1])
    assert res["passed"] is False and res["gradcheck"]["relu"] > 1e-2
    assert re.search(r"relu\s+\S+\s+1e-07 FAIL", out)


@pytest.mark.slow
def test_python_m_fc_jax_help():
    for argv in (["--help"], ["train", "--help"]):
        proc = subprocess.run(
            [sys.executable, "-m", "fc_jax", *argv],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert (
            ("gradcheck" in proc.stdout) if argv == ["--help"] else ("--hidden-dims" in proc.stdout)
        )
    assert cli.main(["--help"]) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        ("train --lr 1e-3", "unknown flag --lr; did you mean --learning-rate?"),
        ("train --lr-dec 0.5", "unknown flag --lr-dec; did you mean --lr-decay?"),  # no prefixes
        ("train --learn 1e-3", "unknown flag --learn; did you mean --learning-rate?"),
        ("train --lerning-rate=1e-3", "unknown flag --lerning-rate; did you mean --learning-rate?"),
        ("sweep --lr 1e-3 1e-2", "unknown flag --lr; did you mean --learning-rate?"),
        ("sweep --learning-rate-r 1e-4 1e-2", "did you mean --learning-rate-range?"),
        (
            "train --dropout 0.25",
            "did you mean --keep-prob? (--keep-prob is the KEEP probability = "
            "1 - dropout rate: --dropout 0.25 is --keep-prob 0.75)",
        ),
        ("sweep --dropout 0.5 0.25", "--dropout 0.5 0.25 is --keep-prob 0.5 0.75"),
        ("eval run --input x.npy", "unknown flag --input; did you mean --inputs?"),
        ("train --zzz", "fc-jax train: unknown flag --zzz (see fc-jax train --help)"),
    ],
)
def test_an_unknown_flag_names_the_closest_real_one(argv, message):
    from fc_jax.cli.flags import UsageError

    with pytest.raises(UsageError) as exc:
        cli.build_parser().parse_args(argv.split())
    assert message in str(exc.value)


def test_an_unknown_flag_is_one_line_and_creates_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    code, lines, err = _train(capsys, "--dataset", "digits", "--lr", "1e-3", "--out", out)
    assert code == 2 and not lines and "Traceback" not in err
    assert err.strip().splitlines() == [
        "error: fc-jax train: unknown flag --lr; did you mean --learning-rate? "
        "(see fc-jax train --help)"
    ]
    assert not out.exists()
    # exact names still parse
    args = cli.build_parser().parse_args(["train", "--lr-decay", "0.5", "--learning-rate", "1"])
    assert (args.lr_decay, args.learning_rate) == (0.5, 1.0)


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == "fc-jax 0.1.0\n"


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_out_is_never_a_foreign_folder_or_the_data_folder(tmp_path, capsys, monkeypatch, command):
    mine = tmp_path / "mine"
    (mine / "photos").mkdir(parents=True)
    for name in ("a.txt", "b.npy", "c.csv", "d.md"):
        (mine / name).write_text("keep me")
    data = tmp_path / "data"
    (data / "cifar-10-batches-py").mkdir(parents=True)
    monkeypatch.setenv("FC_JAX_DATA_DIR", str(data))
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    space = ["--learning-rate", "1e-3", "1e-2"] if command == "sweep" else []
    for out, extra, message in [
        (
            mine,
            [],
            f"--out {mine} holds other files (a.txt, b.npy, c.csv, d.md and 1 more) and "
            f"is not an fc-jax run; give a new or empty folder, e.g. --out {mine / 'run'}",
        ),
        (
            data,
            [],
            f"--out {data} is the data folder ($FC_JAX_DATA_DIR), which fc-jax never writes to",
        ),
        (data / "run", [], f"lies inside the data folder {data} ($FC_JAX_DATA_DIR)"),
        (mine / "x", ["--data-dir", mine], f"lies inside the data folder {mine} (--data-dir)"),
    ]:
        code = cli.main(
            [command, "--dataset", "digits", *space, *map(str, extra), "--out", str(out)]
        )
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
        assert message in lines[0]
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_out_may_be_an_fc_jax_run_or_an_empty_folder(tmp_path):
    from fc_jax.workdir.folders import check_out_dir

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".lock").write_text("")  # left by a run stopped before its checkpoint
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.npz").write_bytes(b"")
    (tmp_path / "run" / "notes.txt").write_text("mine")
    for name in ("empty", "run", "new"):
        assert check_out_dir(tmp_path / name) == tmp_path / name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "run"]


def test_eval_takes_channels_last_images_and_refuses_scaled_ones(tmp_path, capsys):
    from fc_jax import models
    from fc_jax.storage.model import save_model

    config = models.NetConfig((8,), input_dim=3072, num_classes=10)
    params = models.init_params(jax.random.key(3), config, 0.05)
    mean = np.random.default_rng(4).uniform(0, 255, 3072)
    save_model(
        tmp_path / "run", config, params, None, mean, meta={"settings": {"dataset": "cifar10"}}
    )
    chw = np.random.default_rng(5).integers(0, 256, (20, 3, 32, 32), dtype=np.uint8)
    preds = []
    for name, x in [("chw", chw), ("hwc", chw.transpose(0, 2, 3, 1))]:
        np.save(tmp_path / f"{name}.npy", x)
        assert (
            cli.main(["eval", str(tmp_path / "run"), "--inputs", str(tmp_path / f"{name}.npy")])
            == 0
        )
        preds.append(capsys.readouterr().out.splitlines()[0])
    assert preds[0] == preds[1] and len(set(preds[0].split())) > 1
    np.save(tmp_path / "scaled.npy", chw.transpose(0, 2, 3, 1) / 255.0)
    code = cli.main(
        [
            "eval",
            str(tmp_path / "run"),
            "--inputs",
            str(tmp_path / "scaled.npy"),
            "--output",
            str(tmp_path / "pred.npy"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 2 and not captured.out and not (tmp_path / "pred.npy").exists()
    assert captured.err.splitlines() == [
        f"error: --inputs {tmp_path / 'scaled.npy'}: X looks scaled to [0, 1] (values in [0, 1]); "
        "pass raw pixel values 0..255 as stored (multiply by 255)"
    ]


def _prepared(command: str):
    """The settings and folder `fc-jax train` would use for a printed command line (no training)."""
    from fc_jax.cli.flags import given
    from fc_jax.workdir.training import prepare_train

    words = shlex.split(command)
    assert words[:2] == ["fc-jax", "train"]
    args = cli.build_parser().parse_args(words[1:])
    assert args.resume is None and args.backend == "jax"
    values = given(args, cli.train.SETTING_NAMES)
    s = settings.settings(values.get("dataset", "cifar10"), values)
    plan = prepare_train(args.out, s, data_dir=args.data_dir)
    return plan.settings, plan.out_dir


@pytest.mark.parametrize(
    "dataset, given",
    [
        ("digits", {}),
        ("digits", {"learning_rate": 1e-5, "hidden_dims": [7, 5], "keep_prob": 0.5, "seed": 3}),
        ("cifar10", {"normalization": "none", "num_training": 500, "data_dir": str(DATA)}),
    ],
)
def test_train_command_starts_a_run_with_these_settings(tmp_path, dataset, given):
    from fc_jax.workdir.folders import train_command

    s = settings.settings(dataset, given)
    command = train_command(s, tmp_path / "a run")
    assert f"--out '{tmp_path / 'a run'}'" in command
    got, out = _prepared(command)
    assert out == tmp_path / "a run" and not out.exists()
    assert got == {k: v for k, v in s.items() if k != "data_dir"}


def test_ctrl_c_before_any_checkpoint_says_so_and_how_to_start_again(tmp_path, capsys, monkeypatch):
    from fc_jax.runs import fit, sweep

    checkpointed = []

    def interrupt(*args, **kwargs):
        for out in checkpointed:  # a checkpoint was written before Ctrl-C
            (out / "checkpoint.npz").write_bytes(b"")
        raise KeyboardInterrupt

    monkeypatch.setattr(fit, "fit", interrupt)
    monkeypatch.setattr(sweep, "run_sweep", interrupt)
    for command, space in [("train", []), ("sweep", ["--learning-rate", "1e-3", "1e-2"])]:
        out = tmp_path / command
        argv = [command, *SMALL_DIGITS, *space, "--out", str(out), "--quiet"]
        again = f"fc-jax {command} {' '.join(SMALL_DIGITS + space)} --quiet --out {out}"
        want = [
            f"interrupted before any checkpoint was written: nothing was saved; start again "
            f"with: {again}"
        ]
        assert cli.main(argv) == 130
        assert capsys.readouterr().err.splitlines() == want
        assert _files(out) == set()
        assert cli.main(shlex.split(again)[1:]) == 130  # the command is accepted as it is
        assert capsys.readouterr().err.splitlines() == want
        checkpointed[:] = [out]
        assert cli.main(argv) == 130
        assert capsys.readouterr().err.splitlines() == [
            f"interrupted; continue with: fc-jax {command} --resume {out}"
        ]
        checkpointed.clear()


def test_divergence_prints_a_command_that_starts_again_lower(tmp_path, capsys, monkeypatch):
    from fc_jax.runs import fit, loop

    def diverge(*args, **kwargs):
        raise loop.DivergedError(5, 1, 25)

    monkeypatch.setattr(fit, "fit", diverge)
    out = tmp_path / "run"
    code, _, err = _train(
        capsys,
        *SMALL_DIGITS,
        "--learning-rate",
        "1e-3",
        "--hidden-dims",
        9,
        "--epochs",
        7,
        "--out",
        out,
        "--quiet",
    )
    assert code == 3
    (line,) = err.splitlines()
    assert line.startswith("error: training diverged") and "lower the learning rate" in line
    start = "Start again with a 10x lower learning rate: "
    assert start in line
    s, new_out = _prepared(line.split(start)[1])
    assert new_out == tmp_path / "run-lr0.0001" and s["learning_rate"] == pytest.approx(1e-4)
    want = settings.settings(
        "digits",
        dict(
            learning_rate=1e-4,
            hidden_dims=[9],
            epochs=7,
            num_training=300,
            num_validation=100,
            num_test=100,
        ),
    )
    assert s == {**want, "learning_rate": s["learning_rate"]}


def test_resume_with_another_learning_rate_prints_the_new_run_command(
    tmp_path, capsys, monkeypatch
):
    from types import SimpleNamespace

    from fc_jax.storage import checkpoint

    saved = {
        **settings.settings("digits", {"learning_rate": 1e6, "hidden_dims": [32]}),
        "data_dir": None,
    }
    monkeypatch.setattr(
        checkpoint, "load_run", lambda out: (SimpleNamespace(epoch=4), {"settings": saved})
    )
    run = tmp_path / "div"
    run.mkdir()
    code, lines, err = _train(capsys, "--resume", run, "--learning-rate", "1e-2")
    assert code == 2 and not lines
    (line,) = err.splitlines()
    assert line.startswith(
        "error: conflicts with the checkpoint: --learning-rate 0.01 (checkpoint: 1000000.0); omit "
        "them to continue this run, or start a new one with them: fc-jax train --dataset digits "
    )
    s, out = _prepared(line.split("start a new one with them: ")[1])
    assert out == tmp_path / "div-lr0.01"
    assert s == {**{k: v for k, v in saved.items() if k != "data_dir"}, "learning_rate": 1e-2}
