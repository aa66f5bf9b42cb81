"""Benchmark: TPE over K lanes (`fc_jax.runs.optuna_bridge.optimize`) vs Optuna's usual loop.

Both search the same space (learning rate 1e-4..1e-2 and L2 1e-6..1e-2, log-uniform) with a seeded
TPE sampler and no pruner, for the same number of trials, on a CIFAR-10 subset (5000 training and
1000 validation images) with a [256] batchnorm net, adam, batch 100, 3 epochs per trial:

* lanes: `optimize(..., lanes=K)` asks K trials at a time and trains them as K lanes of one
  compiled program (the run loop's default placement: on CPUs one lane per device, this script
  making one CPU device per core as `fc-jax sweep` does);
* one at a time: `study.optimize(objective, n_trials)`, each trial trained by `fc_jax.fit`
  (one lane, one device; a new run loop per trial, so each trial compiles).

Each study is in SQLite in a temporary folder. Wall time includes compilation, which is also
reported apart; the ratio is lanes / one at a time. Prints a table and ONE JSON line.

    python benchmarks/bench_optuna.py --data-dir /work/shared/data
    python benchmarks/bench_optuna.py --trials 4 --lanes 2 --rows 1000 --epochs 1   # smoke test
"""

import argparse
import json
import sys
import tempfile
import time

from fc_jax.cli import cpu_devices_for_sweeps

cpu_devices_for_sweeps(["sweep"])  # as `fc-jax sweep`: before jax is imported

import jax  # noqa: E402
import optuna  # noqa: E402

from fc_jax import Schedule, fit, make_hparams, models  # noqa: E402
from fc_jax.data.datasets import get_dataset  # noqa: E402
from fc_jax.runs import optuna_bridge, space  # noqa: E402

SPACE = {"learning_rate": space.log_uniform(1e-4, 1e-2), "reg": space.log_uniform(1e-6, 1e-2)}


def _lanes(cfg, data, a, folder):
    study = optuna_bridge.open_study(
        f"sqlite:///{folder}/lanes.db", "lanes", pruner=optuna.pruners.NopPruner()
    )
    t0 = time.perf_counter()
    res = optuna_bridge.optimize(
        cfg,
        data,
        study,
        SPACE,
        a.trials,
        lanes=a.lanes,
        sampler="tpe",
        sampler_seed=a.seed,
        schedule=Schedule(num_epochs=a.epochs),
    )
    return time.perf_counter() - t0, res.compile_seconds, study.best_value


def _one_at_a_time(cfg, data, a, folder):
    study = optuna.create_study(
        storage=f"sqlite:///{folder}/seq.db",
        study_name="seq",
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=a.seed),
        pruner=optuna.pruners.NopPruner(),
    )
    compile_s = []

    def objective(trial):
        hp = make_hparams(
            "adam",
            learning_rate=trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
            reg=trial.suggest_float("reg", 1e-6, 1e-2, log=True),
        )
        run = fit(cfg, data, hparams=hp, schedule=Schedule(num_epochs=a.epochs))
        compile_s.append(run.history["compile_seconds"])
        return run.best_val_acc

    t0 = time.perf_counter()
    study.optimize(objective, n_trials=a.trials)
    return time.perf_counter() - t0, sum(compile_s), study.best_value


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="CIFAR-10 folder (default: $FC_JAX_DATA_DIR)")
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--lanes", type=int, default=8)
    p.add_argument("--rows", type=int, default=5000, help="training images")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0, help="the samplers' seed")
    a = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    d = get_dataset("cifar10", a.data_dir, num_training=a.rows, num_validation=1000, num_test=0)
    data = {k: d[k] for k in ("X_train", "y_train", "X_val", "y_val")}
    cfg = models.NetConfig((256,), input_dim=3072, normalization="batchnorm")
    with tempfile.TemporaryDirectory() as folder:
        lanes = _lanes(cfg, data, a, folder)
        seq = _one_at_a_time(cfg, data, a, folder)
    devices = jax.devices()
    print(
        f"device: {devices[0].device_kind} x {len(devices)} ({jax.default_backend()}); {a.trials} "
        f"trials, {a.rows} images, [256] batchnorm, {a.epochs} epochs each"
    )
    print(f"{'contender':>26} {'wall s':>8} {'compile s':>10} {'best val acc':>13}")
    for name, (wall, comp, best) in (
        (f"TPE over {a.lanes} lanes", lanes),
        ("TPE one at a time (fit)", seq),
    ):
        print(f"{name:>26} {wall:>8.2f} {comp:>10.2f} {best:>13.4f}")
    print(f"ratio (lanes / one at a time): wall {lanes[0] / seq[0]:.3f}")
    print(
        json.dumps(
            dict(
                bench="optuna",
                device=str(devices[0].device_kind),
                devices=len(devices),
                trials=a.trials,
                lanes=a.lanes,
                rows=a.rows,
                epochs=a.epochs,
                lanes_wall_s=round(lanes[0], 3),
                lanes_compile_s=round(lanes[1], 3),
                lanes_best=lanes[2],
                seq_wall_s=round(seq[0], 3),
                seq_compile_s=round(seq[1], 3),
                seq_best=seq[2],
                ratio=round(lanes[0] / seq[0], 4),
                command=" ".join(sys.argv),
            )
        )
    )


if __name__ == "__main__":
    main()
