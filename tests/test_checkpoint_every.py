"""Checkpoints by time (`Schedule.checkpoint_every`, `--checkpoint-every`): when they are written,
that the last finished epoch is always saved (end, divergence, Ctrl-C, SIGTERM), and that a resume
from whatever was written last ends bit for bit where an uninterrupted run ends."""

import json
import signal
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from fc_jax import cli, models
from fc_jax.data.datasets import synthetic
from fc_jax.hparams import make_hparams
from fc_jax.runs import epoch, fit, loop
from fc_jax.runs.schedule import Schedule, check_schedule, checkpoint_due
from fc_jax.storage import checkpoint
from fc_jax.storage.checkpoint import load_run
from tests.helpers import spawn_fc_jax

REPO = Path(__file__).resolve().parents[1]
SMALL = "--dataset digits --num-training 300 --num-validation 100 --num-test 100 --batch-size 50"
SMALL = [*SMALL.split(), "--hidden-dims", "16", "--quiet"]
CONFIG = models.NetConfig((8,), input_dim=4, num_classes=3)


def _data():
    X, y = synthetic(96, 4, 3, seed=0)
    return {"X_train": X[:64], "y_train": y[:64], "X_val": X[64:], "y_val": y[64:]}


def _fit(epochs, every, seen, progress=None):
    """A 4-8-3 net; `seen` gets the epoch of every `on_epoch_end` call."""
    hp = make_hparams("adam", jnp.float32, learning_rate=1e-2, lr_decay=1.0)
    return fit.fit(
        CONFIG,
        _data(),
        hparams=hp,
        schedule=Schedule(num_epochs=epochs, batch_size=16, checkpoint_every=every),
        callbacks=loop.Callbacks(on_epoch_end=lambda r: seen.append(r.epoch), progress=progress),
    )


# ------------------------------------------------------------------------------ the policy
def test_checkpoint_due_waits_for_seconds_and_ten_times_the_last_write():
    assert checkpoint_due(0, 0.0, 5.0)  # 0: every epoch, whatever a write costs
    assert not checkpoint_due(60, 59.9, 0.1) and checkpoint_due(60, 60.0, 0.1)
    assert not checkpoint_due(1, 19.0, 2.0) and checkpoint_due(1, 20.0, 2.0)  # 10 x a 2 s write


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "60", True])
def test_schedule_refuses_bad_seconds(bad):
    with pytest.raises(ValueError, match="checkpoint_every must be a number of seconds >= 0"):
        check_schedule(Schedule(checkpoint_every=bad), 100)


# ------------------------------------------------------------------- when the loop writes
@pytest.mark.slow
def test_large_seconds_write_once_at_the_end_and_zero_every_epoch():
    seen = []
    _fit(5, 1e9, seen)
    assert seen == [5]
    seen = []
    _fit(5, 0, seen)
    assert seen == [1, 2, 3, 4, 5]


def test_a_fake_clock_writes_when_seconds_have_passed(monkeypatch):
    clock = iter(float(t) for t in range(0, 10**6, 7))  # every reading 7 s later
    monkeypatch.setattr(loop.time, "perf_counter", lambda: next(clock))
    seen = []
    _fit(6, 30, seen)
    assert seen[-1] == 6 and 1 < len(seen) < 6  # some epochs written, others skipped


def test_an_interrupt_saves_the_last_finished_epoch():
    def progress(epoch, done, total):
        if epoch == 4:
            raise KeyboardInterrupt

    seen = []
    with pytest.raises(KeyboardInterrupt):
        _fit(6, 1e9, seen, progress=progress)
    assert seen == [3]


def test_divergence_saves_the_last_good_epoch(monkeypatch):
    real = epoch.one_epoch

    def third_diverges(ctx, lanes, todo, e):  # as the engine marks a non-finite loss
        lanes = real(ctx, lanes, todo, e)
        if e == 2:
            lanes.ts.diverged[:] = True
            lanes.history[0]["loss"][-1] = float("nan")
        return lanes

    monkeypatch.setattr(epoch, "one_epoch", third_diverges)
    seen = []
    with pytest.raises(loop.DivergedError, match="at epoch 3"):
        _fit(6, 1e9, seen)
    assert seen == [2]


# ------------------------------------------------------------------------------ the CLI
def _main(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    return code, *capsys.readouterr()


def _count_writes(monkeypatch):
    writes, real = [], checkpoint.save_lanes

    def counted(out, lanes, meta):
        writes.append(int(lanes.epoch.max()))
        return real(out, lanes, meta)

    monkeypatch.setattr(checkpoint, "save_lanes", counted)
    return writes


@pytest.mark.slow
@pytest.mark.parametrize(("every", "expected"), [(None, [5]), ("0", [1, 2, 3, 4, 5])])
def test_train_writes_at_the_end_by_default_and_every_epoch_with_zero(
    tmp_path, capsys, monkeypatch, every, expected
):
    writes = _count_writes(monkeypatch)
    extra = [] if every is None else ["--checkpoint-every", every]
    code, _, err = _main(capsys, "train", *SMALL, "--epochs", 5, *extra, "--out", tmp_path / "r")
    assert code == 0, err
    assert writes == expected and load_run(tmp_path / "r")[0].epoch == 5


@pytest.mark.parametrize("command", ["train", "sweep"])
@pytest.mark.parametrize("bad", ["-1", "soon", "nan"])
def test_bad_seconds_are_refused_in_one_line(tmp_path, capsys, command, bad):
    code, _, err = _main(
        capsys, command, *SMALL, "--checkpoint-every", bad, "--out", tmp_path / "r"
    )
    assert code == 2
    assert err.strip() == (
        f"error: fc-jax {command}: argument --checkpoint-every: expected a number of seconds >= 0, "
        f"got {bad if bad != 'soon' else repr(bad)} (see fc-jax {command} --help)"
    )
    assert not (tmp_path / "r").exists()


def _epochs_printed(stdout: str) -> int:
    return max(
        (int(line.split()[1]) for line in stdout.splitlines() if line.startswith("(Epoch")),
        default=0,
    )


def _read_until(proc, lines: list, done) -> None:
    while not done():
        lines.append(proc.stdout.readline())
        assert lines[-1], proc.communicate()  # the process ended


def _history(folder: Path) -> dict:
    doc = json.loads((folder / "history.json").read_text())
    h = doc["history"]
    return {k: h[k] for k in ("loss", "train_acc", "val_acc", "lr")} | {"test": doc["test_acc"]}


@pytest.mark.slow
def test_sigkill_between_writes_resumes_bit_for_bit(tmp_path):
    """Killed after its last write and later epochs: the resume trains those again, exactly."""
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    proc = spawn_fc_jax(
        "train", *SMALL, "--epochs", 10**5, "--checkpoint-every", 0.5, "--out", killed
    )
    lines = []
    _read_until(proc, lines, lambda: (killed / "checkpoint.npz").exists())
    saved = load_run(killed)[0].epoch
    _read_until(proc, lines, lambda: _epochs_printed("".join(lines)) > saved + 1)
    proc.send_signal(signal.SIGKILL)
    lines.append(proc.communicate(timeout=60)[0])
    assert proc.returncode == -signal.SIGKILL
    assert load_run(killed)[0].epoch == saved < _epochs_printed("".join(lines)) - 1
    epochs = _epochs_printed("".join(lines)) + 2  # past where it was killed
    proc = spawn_fc_jax("train", "--resume", killed, "--epochs", epochs, "--quiet")
    assert proc.communicate(timeout=300)[0] and proc.returncode == 0
    proc = spawn_fc_jax("train", *SMALL, "--epochs", epochs, "--out", straight)
    assert proc.communicate(timeout=300)[0] and proc.returncode == 0
    assert _history(killed) == _history(straight)
    m, n = np.load(straight / "model.npz"), np.load(killed / "model.npz")
    assert all(m[k].tobytes() == n[k].tobytes() for k in m.files if k != "meta")


@pytest.mark.slow
def test_sigterm_saves_the_latest_epoch_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    proc = spawn_fc_jax("train", *SMALL, "--epochs", 10**5, "--checkpoint-every", 1e9, "--out", out)
    lines = []
    _read_until(proc, lines, lambda: len(lines) >= 3)
    proc.send_signal(signal.SIGTERM)
    stdout, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip() == f"interrupted; continue with: fc-jax train --resume {out}"
    assert load_run(out)[0].epoch == _epochs_printed("".join(lines) + stdout) >= 3
