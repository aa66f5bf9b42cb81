"""Seconds per training epoch: the compiled scan engine vs the course `Solver`, a per-step jit loop
and the numpy reference.

Workloads (issue #4):
  W1: net [100, 100, 100, 100], adam lr 1e-3, batch 100, 490 steps on 49000 x 3072 float32 data.
  W2: net [100], sgd, batch 200, 245 steps on the same data.
Minibatches are drawn with replacement (the cs231n Solver). The engine, the step loop and numpy run
the same indices. Compile time is measured apart (`compile()` of the lowered epoch, the better of two
fresh builds; tracing and lowering are reported apart); steady-state
times are the best of `--repeats` epochs, each closed with `block_until_ready()`, and the contenders
are interleaved within each repeat (the machine's speed drifts). Achieved GFLOP/s counts useful FLOPs
only (forward, dW, and dX except the input layer's) against the float32 matmul peak measured in the
same run (sampled before and between the repeats; the best counts). The facade `Solver` (W1 only;
`--no-solver` skips it) trains fresh models for 1 and 4 epochs with the course's defaults (accuracy
checks on 1000 train and 1000 val samples, host-drawn indices); its epoch is a third of the difference,
and its one-off cost per new Solver (the copy of the data to the device, setup) the rest.
Prints a table, the three headline figures (W1 fraction of peak, Solver/engine, compile) and one JSON line.

`--precision` instead times the bfloat16 policy (`NetConfig(compute_dtype="bfloat16")`) against
float32: the engine's adam epoch for W1 ([100] x 4, batch 100), [2048, 1024] batch 200 and
[1024, 1024] batch 500, each compiled apart, best of `--repeats` interleaved epochs, with the ratio,
the mean-loss gap and the machine (lscpu model name, cpu family, `fc_jax.precision.fast_bfloat16`).
The figures, with the machine that gave them, are in benchmarks/RESULTS.md.

    python benchmarks/bench_train.py                 # full size
    python benchmarks/bench_train.py --steps 20      # quick check
    python benchmarks/bench_train.py --precision --steps 10 --n 10000   # bf16 vs float32, reduced
"""

import argparse
import json
import platform
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax import models, optim, precision, train
from fc_jax.cs231n.classifiers.fc_net import FullyConnectedNet
from fc_jax.cs231n.solver import Solver
from fc_jax.hparams import make_hparams
from fc_jax.reference import fc_net as ref_net
from fc_jax.reference import optim as ref_optim

WORKLOADS = {
    "W1": dict(hidden=(100, 100, 100, 100), rule="adam", lr=1e-3, batch=100),
    "W2": dict(hidden=(100,), rule="sgd", lr=1e-2, batch=200),
}


def useful_flops(dims, batch):
    """2*B*(sum fan_in*fan_out) for the forward and again for dW, plus dX for all but the input layer."""
    mm = [dims[i] * dims[i + 1] for i in range(len(dims) - 1)]
    return 2 * batch * (2 * sum(mm) + sum(mm[1:]))


_PEAK = [0.0]  # the best matmul rate seen in this run (sampled before and between the epochs)


def matmul_peak(repeats=5):
    """Best float32 GFLOP/s of a square matmul (XLA and numpy, sizes 1024 and 2048) in this run."""
    best = _PEAK[0]
    for n in (1024, 2048):
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
        f = jax.jit(lambda a: a @ a)
        f(a).block_until_ready()
        an = np.asarray(a)
        for fn in (lambda f=f, a=a: f(a).block_until_ready(), lambda an=an: an @ an):
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    _PEAK[0] = best
    return best


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def solver_run(w, Xn, yn, num_epochs):
    """A fresh course model and `Solver` trained for `num_epochs` (verbose off), in seconds."""
    t = time.perf_counter()
    np.random.seed(0)
    model = FullyConnectedNet(list(w["hidden"]), weight_scale=1e-2, dtype=np.float32)
    data = dict(X_train=Xn, y_train=yn, X_val=Xn[:1000], y_val=yn[:1000])
    solver = Solver(
        model,
        data,
        update_rule=w["rule"],
        optim_config={"learning_rate": w["lr"]},
        batch_size=w["batch"],
        num_epochs=num_epochs,
        verbose=False,
    )
    solver.train()
    return time.perf_counter() - t


def bench(name, X, y, Xn, yn, steps, repeats, ref_steps, with_solver):
    w = WORKLOADS[name]
    config = models.NetConfig(w["hidden"])
    opt = optim.get_optimizer(w["rule"])
    hp = make_hparams(w["rule"], learning_rate=w["lr"])
    ts0 = train.init_train_state(jax.random.key(0), config, opt, 1e-2)
    idx = train.sample_indices(jax.random.key(1), X.shape[0], steps, w["batch"])
    idx_np = np.asarray(idx)

    # Engine: one jit of a lax.scan over the epoch.
    # Compile time: the better of two fresh builds (the first compile in a process and a busy
    # neighbour on the VM each add noise); tracing + lowering is timed apart.
    lower_s, compile_s = [], []
    for _ in range(2):
        t = time.perf_counter()
        lowered = train.make_epoch(config, opt).lower(ts0, X, y, idx, hp)
        lower_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        epoch = lowered.compile()
        compile_s.append(time.perf_counter() - t)
    lower_s, compile_s = min(lower_s), min(compile_s)
    run_engine = lambda: epoch(ts0, X, y, idx, hp)[1].block_until_ready()  # noqa: E731
    run_engine()

    # Course-style loop: one jitted step per minibatch, the batch gathered on the host (as a Solver).
    step = train.make_step(config, opt)
    t = time.perf_counter()
    step_c = step.lower(ts0, Xn[idx_np[0]], yn[idx_np[0]], hp).compile()
    step_compile_s = time.perf_counter() - t

    def loop():
        ts = ts0
        for i in idx_np:
            ts, loss = step_c(ts, Xn[i], yn[i], hp)
        loss.block_until_ready()

    # The facade Solver (full-size epochs only: its epoch length is N // batch).
    with_solver = with_solver and steps == X.shape[0] // w["batch"]
    if with_solver:
        solver_run(w, Xn, yn, 1)  # compiles and caches its scans and predict
    times = {k: [] for k in ("engine", "loop", "solver1", "solver4")}
    for _ in range(repeats):  # interleaved: each repeat times every contender once
        times["engine"].append(timed(run_engine))
        times["loop"].append(timed(loop))
        if with_solver:
            times["solver1"].append(solver_run(w, Xn, yn, 1))
            times["engine"].append(timed(run_engine))
            times["solver4"].append(solver_run(w, Xn, yn, 4))
        matmul_peak(1)
    engine_s, loop_s = min(times["engine"]), min(times["loop"])

    # numpy reference: the course's FullyConnectedNet.loss + update rule, per step.
    np.random.seed(0)
    net = ref_net.FullyConnectedNet(list(w["hidden"]), weight_scale=1e-2, dtype=np.float32)
    update = getattr(ref_optim, w["rule"])
    configs = {k: {"learning_rate": w["lr"]} for k in net.params}
    n_ref = min(ref_steps, steps)
    t = time.perf_counter()
    for i in idx_np[:n_ref]:
        _, grads = net.loss(Xn[i], yn[i])
        for k in net.params:
            net.params[k], configs[k] = update(net.params[k], grads[k], configs[k])
    ref_s = (time.perf_counter() - t) * steps / n_ref

    flops = useful_flops(config.dims, w["batch"]) * steps
    solver = {}
    if with_solver:
        epoch_s = (min(times["solver4"]) - min(times["solver1"])) / 3
        solver = dict(
            solver_epoch_s=epoch_s,
            solver_setup_s=min(times["solver1"]) - epoch_s,
            solver_vs_engine=epoch_s / engine_s,
        )
    return dict(
        workload=name,
        steps=steps,
        engine_s=engine_s,
        engine_compile_s=compile_s,
        engine_lower_s=lower_s,
        step_loop_s=loop_s,
        step_compile_s=step_compile_s,
        numpy_ref_s=ref_s,
        numpy_ref_steps_timed=n_ref,
        engine_gflops=flops / engine_s / 1e9,
        speedup_vs_loop=loop_s / engine_s,
        speedup_vs_numpy=ref_s / engine_s,
        **solver,
    )


def cpu_name():
    """The CPU's model name and core count (Linux /proc/cpuinfo), else the platform's word."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        flags = open("/proc/cpuinfo").read()
        isa = "AVX-512" if " avx512f" in flags else "AVX2" if " avx2" in flags else ""
        return f"{names[0]}, {len(names)} cores{', ' + isa if isa else ''}"
    except (OSError, IndexError):
        return platform.processor() or platform.machine()


PRECISION_WORKLOADS = {
    "W1": dict(hidden=(100, 100, 100, 100), batch=100),
    "2048x1024": dict(hidden=(2048, 1024), batch=200),
    "1024x1024": dict(hidden=(1024, 1024), batch=500),
}


def bench_precision(name, X, y, steps, repeats, rule="adam"):
    """Best epoch seconds, float32 vs the bfloat16 policy (`rule`, lr 1e-3), the same indices."""
    w = PRECISION_WORKLOADS[name]
    opt, hp = optim.get_optimizer(rule), make_hparams(rule, learning_rate=1e-3)
    idx = train.sample_indices(jax.random.key(1), X.shape[0], steps, w["batch"])
    runs, out = {}, dict(workload=name, hidden=list(w["hidden"]), batch=w["batch"], steps=steps)
    out["update_rule"] = rule
    for tag, cd in (("float32", None), ("bfloat16", "bfloat16")):
        config = models.NetConfig(w["hidden"], compute_dtype=cd)
        ts0 = train.init_train_state(jax.random.key(0), config, opt, 1e-2)
        t = time.perf_counter()
        epoch = train.make_epoch(config, opt).lower(ts0, X, y, idx, hp).compile()
        out[f"{tag}_compile_s"] = time.perf_counter() - t
        out[f"{tag}_mean_loss"] = float(jnp.mean(epoch(ts0, X, y, idx, hp)[1]))  # warm-up
        runs[tag] = lambda epoch=epoch, ts0=ts0: epoch(ts0, X, y, idx, hp)[1].block_until_ready()
    times = {tag: [] for tag in runs}
    for _ in range(repeats):  # interleaved: the machine's speed drifts
        for tag, run in runs.items():
            times[tag].append(timed(run))
    out.update({f"{tag}_s": min(ts) for tag, ts in times.items()})
    out["bf16_over_f32"] = out["bfloat16_s"] / out["float32_s"]
    out["loss_gap"] = abs(out["bfloat16_mean_loss"] - out["float32_mean_loss"])
    return out


def machine():
    """lscpu's model name and cpu family (else /proc/cpuinfo's), and whether bf16 matmuls are fast."""
    fields = {}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        text = precision.read_cpuinfo() or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    dev = jax.devices()[0]
    return dict(
        device=str(dev),
        cpu_model=fields.get("model name", platform.processor() or platform.machine()),
        cpu_family=fields.get("cpu family", "?"),
        fast_bf16=precision.fast_bfloat16(dev),
    )


def main_precision(args, X, y):
    m = machine()
    print(
        f"machine: {m['cpu_model']}, cpu family {m['cpu_family']}, device {m['device']}, "
        f"fast bfloat16 matmul: {'yes' if m['fast_bf16'] else 'no'}"
    )
    notice = precision.precision_notice(models.NetConfig(compute_dtype="bfloat16"), jax.devices())
    if notice:
        print(notice)
    results = []
    for name in args.workloads:
        steps = args.steps or args.n // PRECISION_WORKLOADS[name]["batch"]
        r = bench_precision(name, X, y, steps, args.repeats, args.update_rule)
        results.append(r)
        print(
            f"{name} ({args.update_rule}, batch {r['batch']}, {steps} steps): float32 {r['float32_s']:.3f} s, "
            f"bfloat16 {r['bfloat16_s']:.3f} s, bf16/f32 {r['bf16_over_f32']:.2f}x; compile "
            f"{r['float32_compile_s']:.2f} / {r['bfloat16_compile_s']:.2f} s; mean loss "
            f"{r['float32_mean_loss']:.4f} / {r['bfloat16_mean_loss']:.4f}"
        )
    print(json.dumps(dict(machine=m, jax=jax.__version__, precision=results)))


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=None, help="steps per epoch (default: N // batch)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--ref-steps", type=int, default=100, help="numpy steps timed (scaled to an epoch)"
    )
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS))
    ap.add_argument("--n", type=int, default=49000)
    ap.add_argument("--no-solver", action="store_true", help="skip the facade Solver (W1)")
    ap.add_argument(
        "--precision",
        action="store_true",
        help="bfloat16 policy vs float32 epochs instead (workloads: "
        + ", ".join(PRECISION_WORKLOADS)
        + ")",
    )
    ap.add_argument(
        "--update-rule",
        default="adam",
        choices=list(optim.OPTIMIZERS),
        help="with --precision: the update rule (default: adam)",
    )
    args = ap.parse_args()
    if args.precision and args.workloads == list(WORKLOADS):
        args.workloads = list(PRECISION_WORKLOADS)
    rng = np.random.default_rng(0)
    Xn = rng.standard_normal((args.n, 3072), dtype=np.float32)
    yn = rng.integers(0, 10, args.n).astype(np.int32)
    X, y = jnp.asarray(Xn), jnp.asarray(yn)
    if args.precision:
        return main_precision(args, X, y)
    peak = matmul_peak()
    results = []
    for name in args.workloads:
        steps = args.steps or args.n // WORKLOADS[name]["batch"]
        r = bench(
            name,
            X,
            y,
            Xn,
            yn,
            steps,
            args.repeats,
            args.ref_steps,
            name == "W1" and not args.no_solver,
        )
        results.append(r)
    peak = matmul_peak(1)
    for r in results:
        r["fraction_of_peak"] = r["engine_gflops"] / peak
        print(
            f"{r['workload']}: engine {r['engine_s']:.3f} s/epoch ({r['engine_gflops']:.1f} GFLOP/s, "
            f"{100 * r['fraction_of_peak']:.0f}% of {peak:.0f} peak; compile {r['engine_compile_s']:.2f} s) | "
            f"per-step jit loop {r['step_loop_s']:.3f} s ({r['speedup_vs_loop']:.2f}x) | "
            f"numpy reference {r['numpy_ref_s']:.3f} s ({r['speedup_vs_numpy']:.1f}x)"
            + (
                f" | Solver {r['solver_epoch_s']:.3f} s/epoch ({r['solver_vs_engine']:.3f}x engine; "
                f"+{r['solver_setup_s']:.2f} s per new Solver)"
                if "solver_epoch_s" in r
                else ""
            )
        )
    w1 = next((r for r in results if r["workload"] == "W1"), None)
    if w1 is not None:
        print(
            f"HEADLINE W1 on {cpu_name()}: engine at {100 * w1['fraction_of_peak']:.1f}% of the "
            f"{peak:.0f} GFLOP/s float32 matmul peak; Solver/engine "
            + (f"{w1['solver_vs_engine']:.3f}" if "solver_vs_engine" in w1 else "n/a")
            + f"; compile {w1['engine_compile_s']:.2f} s (+ {w1['engine_lower_s']:.2f} s trace and lower)"
        )
    print(
        json.dumps(
            dict(
                device=str(jax.devices()[0]),
                device_kind=jax.devices()[0].device_kind,
                cpu=cpu_name(),
                jax=jax.__version__,
                matmul_peak_gflops=peak,
                results=results,
            )
        )
    )


if __name__ == "__main__":
    main()
