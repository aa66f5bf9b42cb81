"""The fault suite's scenarios as tests: nothing lost, one writer per folder, one line per mistake.

Each test drives `fc-jax` as a user would (in-process through `cli.main`, or as a real process
when a signal, a resource limit or a second process is part of the scenario) on the bundled digits,
and checks what the user sees (exit code, ONE stderr line, no traceback) and what is left on disk.
The long kill-at-random-moments loop is `scripts/fault_loop.py`.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fc_jax import cli
from fc_jax.storage.checkpoint import load_run
from tests.helpers import spawn_fc_jax

REPO = Path(__file__).resolve().parents[1]
SMALL = "--dataset digits --num-training 300 --num-validation 100 --num-test 100 --batch-size 50"
SMALL = SMALL.split() + ["--hidden-dims", "16", "--quiet"]


def _main(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _wait_until_importing_jax(proc, timeout=60.0):
    """Wait until the child maps jaxlib: it is then inside `main()`'s start-up (jax is imported
    only there), past the SIGINT handler `spawn_fc_jax`'s child installs and before any output exists.
    A fixed sleep was flaky: on a loaded machine the interpreter had not yet installed its handler,
    and a child started from a shell job inherits SIGINT ignored, so the signal was lost."""
    maps, t0 = Path(f"/proc/{proc.pid}/maps"), time.time()
    if not maps.exists():  # not Linux: give the interpreter time to start
        time.sleep(1.0)
        return
    while time.time() - t0 < timeout:
        assert proc.poll() is None, "the child ended before it imported jax"
        if "jaxlib" in maps.read_text():
            return
        time.sleep(0.005)
    raise AssertionError("the child never imported jax")


def _wait_for(path: Path, timeout=120.0, poll=0.05):
    t0 = time.time()
    while not path.exists():
        assert time.time() - t0 < timeout, f"{path} never appeared"
        time.sleep(poll)


def _visible(folder: Path) -> set:
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")}


# ------------------------------------------------------------------ 1. nothing half-written
@pytest.mark.slow
def test_a_failing_write_names_the_file_and_keeps_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    assert (
        subprocess.run(
            [sys.executable, "-m", "fc_jax", "train", *SMALL, "--epochs", "1", "--out", out],
            cwd=REPO,
            capture_output=True,
        ).returncode
        == 0
    )
    before = (out / "checkpoint.npz").read_bytes()
    limit = len(before) // 2  # the next checkpoint cannot be written: EFBIG

    small_files = (  # in the child itself: a preexec_fn would fork this multithreaded process
        "import resource, runpy, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
        "sys.argv[0] = 'fc-jax'; runpy.run_module('fc_jax', run_name='__main__')"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            small_files,
            "train",
            "--resume",
            str(out),
            "--epochs",
            "3",
            "--quiet",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 4
    line = _one_line(err)
    assert line == f"error: cannot write {out / 'checkpoint.npz'}: File too large (EFBIG)"
    assert (out / "checkpoint.npz").read_bytes() == before  # the last good checkpoint, intact
    assert load_run(out)[0].epoch == 1
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_temp_files_of_a_killed_write_are_removed_by_the_next_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert _main(capsys, "train", *SMALL, "--epochs", 1, "--out", out)[0] == 0
    stale = out / ".checkpoint.npz.k1ll3d_x.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert _main(capsys, "train", "--resume", out, "--epochs", 2)[0] == 0
    assert not stale.exists() and load_run(out)[0].epoch == 2


# ------------------------------------------------------------------ 2. one writer per folder
@pytest.mark.slow
def test_a_second_writer_is_refused_and_kill_9_leaves_no_stale_lock(tmp_path, capsys):
    out = tmp_path / "run"
    long_run = "--dataset digits --epochs 500 --hidden-dims 16 --quiet --checkpoint-every 0"
    first = spawn_fc_jax("train", *long_run.split(), "--out", out)  # a checkpoint every epoch
    try:
        _wait_for(out / "checkpoint.npz")
        code, _, err = _main(
            capsys, "train", "--dataset", "digits", "--epochs", 1, "--quiet", "--out", out
        )
        assert code == 2
        line = _one_line(err)
        assert f"{out} holds a checkpoint already" in line or "in use by another" in line
        code, _, err = _main(capsys, "train", "--resume", out, "--epochs", 501, "--quiet")
        assert code == 2
        line = _one_line(err)
        assert f"{out} is in use by another fc-jax process (pid {first.pid}: fc-jax train" in line
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    assert (out / ".lock").exists()  # the file stays; the kernel released the lock
    epoch = load_run(out)[0].epoch
    code, _, err = _main(capsys, "train", "--resume", out, "--epochs", epoch + 1)
    assert code == 0, err


# -------------------------------------------------------------- 3. checkpoints and resuming
@pytest.mark.slow
def test_resume_accepts_the_checkpoint_file_and_says_when_complete(tmp_path, capsys):
    out = tmp_path / "run"
    assert _main(capsys, "train", *SMALL, "--epochs", 2, "--out", out)[0] == 0
    code, stdout, err = _main(capsys, "train", "--resume", out / "checkpoint.npz", "--epochs", 3)
    assert code == 0, err and json.loads(stdout.splitlines()[-1])["epochs"] == 3
    code, _, err = _main(capsys, "train", "--resume", out, "--epochs", 2)
    assert code == 2
    assert "has trained 3 epochs already; --epochs 2 is below that" in _one_line(err)
    code, stdout, err = _main(capsys, "train", "--resume", out)
    assert code == 0 and "is complete (3 epochs); nothing to train" in err
    assert json.loads(stdout.splitlines()[-1])["epochs"] == 3


@pytest.mark.slow
def test_an_edited_learning_rate_in_the_meta_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert _main(capsys, "train", *SMALL, "--epochs", 1, "--out", out)[0] == 0
    path = out / "checkpoint.npz"
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta["hparams"]["learning_rate"] = 1.0
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)
    code, _, err = _main(capsys, "train", "--resume", out, "--epochs", 2)
    assert code == 2
    assert _one_line(err) == (
        f"error: corrupt checkpoint {path}: its sha256 checksum does not match its contents"
    )


# --------------------------------------------------- 4. every bad input: one line, nothing made
def _long_name(tmp_path):
    return tmp_path / ("x" * 300)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--out", "{file}"], "is an existing file; give a folder"),
        (["--out", "{file}/sub"], "which is a file"),
        (["--out", "{long}"], "is longer than 255 bytes"),
        (["--seed", "-1"], "--seed: expected an integer in [0, 4294967295], got '-1'"),
        (["--seed", str(2**32)], "expected an integer in [0, 4294967295]"),
        (
            ["--batch-size", "400", "--num-training", "300"],
            "--batch-size 400 is larger than the training set (300",
        ),
        (
            ["--hidden-dims", "100,100"],
            "separate the widths with spaces, e.g. --hidden-dims 100 100",
        ),
        (["--keep-prob", "0"], "keep_prob"),
        (["--epochs", "two"], "expected an integer >= 1, got 'two'"),
        (["--lerning-rate", "1"], "unknown flag --lerning-rate; did you mean --learning-rate?"),
    ],
)
def test_bad_train_input_is_one_line_and_creates_nothing(tmp_path, capsys, argv, message):
    (tmp_path / "file").write_text("not a folder")
    sub = {"{file}": str(tmp_path / "file"), "{long}": str(_long_name(tmp_path))}
    argv = [sub.get(a.split("/")[0], a.split("/")[0]) + a[len(a.split("/")[0]) :] for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, stdout, err = _main(capsys, "train", "--dataset", "digits", *argv)
    assert code == 2
    assert message in _one_line(err) and not stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("kind", ["missing", "folder", "binary", "bad-json"])
def test_bad_spec_files_are_named(tmp_path, capsys, kind):
    spec = tmp_path / "space.json"
    if kind == "folder":
        spec.mkdir()
    elif kind == "binary":
        spec.write_bytes(b"\xff\xfe{\x00")
    elif kind == "bad-json":
        spec.write_text("{grid")
    code, _, err = _main(
        capsys, "sweep", "--dataset", "digits", "--spec", spec, "--out", tmp_path / "out"
    )
    assert code == 2
    assert str(spec) in _one_line(err)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "sweep"])
def test_ctrl_c_exits_130_with_one_line(tmp_path, command):
    out = tmp_path / "run"
    extra = ["--learning-rate", "1e-3", "1e-2"] if command == "sweep" else []
    long_run = "--dataset digits --epochs 500 --hidden-dims 16 --quiet --checkpoint-every 0"
    proc = spawn_fc_jax(command, *long_run.split(), *extra, "--out", out)
    _wait_for(out / "checkpoint.npz")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert _one_line(err) == f"interrupted; continue with: fc-jax {command} --resume {out}"
    # and at start-up, before anything is created
    proc = spawn_fc_jax("train", "--dataset", "digits", "--out", tmp_path / "early")
    _wait_until_importing_jax(proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and _one_line(err) == "interrupted"
    assert not (tmp_path / "early").exists()


# ------------------------------------------------------ 5. honest messages when training fails
@pytest.mark.slow
def test_divergence_in_the_first_epoch_says_no_checkpoint_exists(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _main(
        capsys,
        "train",
        *SMALL,
        "--update-rule",
        "sgd",
        "--learning-rate",
        1e8,
        "--weight-scale",
        1,
        "--epochs",
        3,
        "--out",
        out,
    )
    assert code == 3
    line = _one_line(err)
    assert "non-finite at epoch 1" in line and "no checkpoint exists yet" in line
    assert not (out / "checkpoint.npz").exists()


@pytest.mark.slow
def test_a_sweep_where_everything_diverges_still_writes_its_results(tmp_path, capsys):
    out = tmp_path / "sweep"
    code, stdout, err = _main(
        capsys,
        "sweep",
        *SMALL,
        "--update-rule",
        "sgd",
        "--learning-rate",
        1e8,
        1e9,
        "--weight-scale",
        1,
        "--epochs",
        2,
        "--out",
        out,
    )
    assert code == 3
    assert "every one of the 2 configurations diverged" in _one_line(err)
    assert {"results.csv", "results.json", "sweep.png", "checkpoint.npz"} <= _visible(out)
    summary = json.loads((out / "results.json").read_text())
    assert all(t["diverged"] for t in summary["trials"])
    assert json.loads(stdout.splitlines()[-1])["diverged"] == 2


# ------------------------------------------------- 7. a trained model is something to use
@pytest.mark.slow
def test_eval_reports_the_test_accuracy_and_predicts_raw_images(tmp_path, capsys):
    from fc_jax.data.datasets import get_dataset

    out = tmp_path / "run"
    code, stdout, _ = _main(capsys, "train", *SMALL, "--epochs", 3, "--out", out)
    test_acc = json.loads(stdout.splitlines()[-1])["test_acc"]
    code, stdout, err = _main(capsys, "eval", out)
    assert code == 0, err
    assert json.loads(stdout.splitlines()[-1])["test_acc"] == pytest.approx(test_acc, abs=1e-6)
    raw = get_dataset("digits", None, 300, 100, 100, subtract_mean=False, dtype=np.float64)
    X, y = np.rint(raw["X_test"] * 16).astype(np.uint8), raw["y_test"]  # 0..16 pixels, as stored
    np.save(tmp_path / "x.npy", X)
    code, _, err = _main(
        capsys, "eval", out, "--inputs", tmp_path / "x.npy", "--output", tmp_path / "pred.npy"
    )
    assert code == 0, err
    pred = np.load(tmp_path / "pred.npy")
    assert pred.shape == (100,) and np.mean(pred == y) == pytest.approx(test_acc, abs=1e-6)
    code, _, err = _main(capsys, "eval", tmp_path / "nowhere")
    assert code == 2 and "no such run folder" in _one_line(err)


@pytest.mark.slow
def test_numpy_backend_runs_a_permutation_recipe(tmp_path, capsys):
    code, stdout, err = _main(
        capsys,
        "train",
        *SMALL,
        "--backend",
        "numpy",
        "--sampling",
        "permutation",
        "--epochs",
        2,
        "--out",
        tmp_path / "np",
    )
    assert code == 0, err
    assert json.loads(stdout.splitlines()[-1])["device"] == "numpy (host CPU)"


# ------------------------------------------------------------ sweeps resume after kill -9
def _records(folder: Path) -> list:
    trials = json.loads((folder / "results.json").read_text())["trials"]
    for t in trials:
        t["history"].pop("epoch_seconds")
    return trials


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["full", "halving"])
def test_a_sweep_killed_with_sigkill_resumes_to_the_same_results(tmp_path, capsys, schedule):
    argv = [
        "sweep",
        *SMALL,
        "--learning-rate",
        "1e-3",
        "3e-3",
        "1e-2",
        "--weight-scale",
        "0.05",
        "0.1",
        "0.2",
        "--keep-prob",
        "1",
        "0.8",
        "--epochs",
        "27",
        "--max-lanes",
        "4",
        "--schedule",
        schedule,
    ]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # every run as its own `fc-jax` process: the same CPU devices (one per core) each time
    proc = spawn_fc_jax(*argv, "--out", straight)
    assert proc.communicate(timeout=300)[1] == "" and proc.returncode == 0
    proc = spawn_fc_jax(*argv, "--checkpoint-every", 0, "--out", killed)  # a checkpoint every epoch
    _wait_for(killed / "checkpoint.npz", poll=0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert "results.json" not in _visible(killed)  # it really stopped part way
    proc = spawn_fc_jax("sweep", "--resume", killed, "--quiet")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert _records(killed) == _records(straight)
    for name in sorted(_visible(straight / "models")):
        a, b = np.load(straight / "models" / name), np.load(killed / "models" / name)
        assert all(a[k].tobytes() == b[k].tobytes() for k in a.files if k != "meta")


# ------------------------------------------- 6. --resume remembers where the data came from
DATA = Path(os.environ.get("FC_JAX_DATA_DIR") or REPO.parent / "shared" / "data")


@pytest.mark.slow
@pytest.mark.skipif(
    not (DATA / "cifar-10-batches-py" / "data_batch_1").exists() and not os.environ.get("CI"),
    reason=f"CIFAR-10 is not in {DATA} (CI always has it)",
)
def test_resume_remembers_the_data_folder_given_by_the_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FC_JAX_DATA_DIR", str(DATA))
    out = tmp_path / "run"
    sizes = "--num-training 200 --num-validation 50 --num-test 50 --batch-size 50".split()
    argv = ["train", *sizes, "--hidden-dims", 8, "--epochs", 1, "--quiet", "--out", out]
    assert _main(capsys, *argv)[0] == 0
    monkeypatch.delenv("FC_JAX_DATA_DIR")  # a new shell: the variable is gone
    code, stdout, err = _main(capsys, "train", "--resume", out, "--epochs", 2, "--quiet")
    assert code == 0, err
    assert json.loads(stdout.splitlines()[-1])["epochs"] == 2
    assert load_run(out)[1]["data_dir"] == str((DATA / "cifar-10-batches-py").resolve())
