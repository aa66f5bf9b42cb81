"""One process of the multi-process sweep in `tests/test_multiprocess.py` (not a test module).

Usage: ``python tests/mp_child.py RESULT.npz OUT_DIR [--port P --process-id I --num-processes N]``

With ``--num-processes N > 1`` it joins an N-process JAX job (`jax.distributed.initialize` with the
coordinator at ``localhost:P``), checks that the CPU backend has cross-process collectives (an
all-gather of the process indices; exit code 77 and the error on stderr if it fails), then:

1. runs `fc_jax.runs.sweep.run_sweep` on tiny synthetic data (identical in every process) and saves every
   array of the result, keyed by its path in the result (``history['loss']``, ...), to RESULT.npz;
   this is the test's plumbing, so every process writes its own file;
2. runs ``fc-jax sweep ... --out OUT_DIR`` (the library's own output step), which must write files
   from process 0 only.

Devices come from the environment (``XLA_FLAGS=--xla_force_host_platform_device_count=D``).
"""

import argparse
import sys

import numpy as np

EXIT_NO_COLLECTIVES = 77  # the test skips on this code; any other failure fails it
NO_COLLECTIVES = "no cross-process CPU collectives:"  # starts the reason on stderr

# The sweep whose results are compared: K=6 lanes, max_lanes=4 (two chunks of 4 lanes on 4
# devices, the second padded), per-lane minibatches, dropout keys, batchnorm state and a training
# subsample, so every host<->device step of the sweep (lane-sharded and replicated) runs.
K, N_TRAIN, N_VAL, D, C = 6, 48, 24, 6, 3
CLI_ARGV = [
    "sweep",
    "--dataset",
    "digits",
    "--hidden-dims",
    "16",
    "--learning-rate",
    "1e-3",
    "1e-2",
    "--weight-scale",
    "0.1",
    "--epochs",
    "1",
    "--num-training",
    "200",
    "--num-validation",
    "100",
    "--num-test",
    "100",
    "--quiet",
]


def gather_process_indices() -> list:
    """A cross-process all-gather of each process's index: the smallest collective, no fc_jax."""
    import jax
    from jax.experimental import multihost_utils

    got = multihost_utils.process_allgather(np.array([jax.process_index()], np.int32), tiled=True)
    return np.asarray(got).tolist()


def sweep_result() -> dict:
    """`run_sweep` on the fixed tiny problem; every array of the result by its path."""
    import jax

    from fc_jax import models
    from fc_jax.data.datasets import synthetic
    from fc_jax.runs import space
    from fc_jax.runs.schedule import Schedule
    from fc_jax.runs.sweep import run_sweep

    X, y = synthetic(N_TRAIN + N_VAL, D, C, seed=0, dtype=np.float32)
    data = {"X_train": X[:N_TRAIN], "y_train": y[:N_TRAIN]}
    data.update(X_val=X[N_TRAIN:], y_val=y[N_TRAIN:])
    config = models.NetConfig(
        (8,), input_dim=D, num_classes=C, normalization="batchnorm", dropout=True
    )
    trials = space.grid({"learning_rate": [1e-3, 1e-2, 3e-2], "seed": [0, 1], "keep_prob": [0.8]})
    assert len(trials) == K
    res = run_sweep(
        config,
        data,
        trials,
        schedule=Schedule(
            num_epochs=2, batch_size=8, seed=0, independent_batches=True, num_train_samples=32
        ),
        optimizer="adam",
        max_lanes=4,
    )
    tree = {
        "history": res.history,
        "best_val_acc": res.best_val_acc,
        "best_epoch": res.best_epoch,
        "diverged": res.diverged,
        "best_params": res.best_params,
        "best_model_state": res.best_model_state,
        "final_state": res.final_state,
    }
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("result")
    p.add_argument("out")
    p.add_argument("--port", type=int)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--num-processes", type=int, default=1)
    args = p.parse_args(argv)

    import jax

    if args.num_processes > 1:
        jax.distributed.initialize(
            f"localhost:{args.port}",
            num_processes=args.num_processes,
            process_id=args.process_id,
            initialization_timeout=60,
        )
        try:  # a failure here is the platform's (no fc_jax code runs), so the test skips
            got = gather_process_indices()
        except Exception as exc:  # noqa: BLE001
            impl = jax.config.jax_cpu_collectives_implementation
            print(
                f"{NO_COLLECTIVES} jax {jax.__version__} with jax_cpu_collectives_implementation="
                f"{impl!r}: {type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
            return EXIT_NO_COLLECTIVES
        if got != list(range(args.num_processes)):  # collectives that run but are wrong: fail
            raise SystemExit(f"process_allgather of the process indices gave {got}")
    print(
        f"process {jax.process_index()} / {jax.process_count()}: "
        f"{jax.local_device_count()} local of {jax.device_count()} devices",
        file=sys.stderr,
    )
    np.savez(args.result, **sweep_result())

    from fc_jax import cli

    code = cli.main([*CLI_ARGV, "--out", args.out])
    if code != 0:
        raise SystemExit(f"fc-jax sweep exited with {code}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
