"""A/B of W1 engine-epoch variants (issue #9), interleaved in one process; ratios to the engine.

W1: net [100]x4, adam lr 1e-3, batch 100, `--steps` steps on 49000 x 3072 float32 data. Each
variant is compiled once (compile time printed), checked to produce finite losses, then all are
timed round-robin for `--repeats` rounds; the table gives the best and median per-step time and
best/best against "engine" (the shipped `train.make_epoch`). `--profile` prints instead where the
engine's time goes (XLA:CPU thunk trace of one epoch, by op class and top ops).

    python benchmarks/ab_engine.py --steps 100 --repeats 9
    python benchmarks/ab_engine.py --only engine unroll2 --repeats 15
    python benchmarks/ab_engine.py --profile
"""

import argparse
import collections
import functools
import glob
import gzip
import json
import os
import re
import shutil
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax import losses, models, optim, train
from fc_jax.hparams import make_hparams

CONFIG = models.NetConfig((100, 100, 100, 100))
OPT = optim.get_optimizer("adam")
YNN = "xla_cpu_experimental_ynn_fusion_type"
T = "LIBRARY_FUSION_TYPE_"
# name -> compiler_options for the shipped engine's lowered epoch
OPTIONS = {
    "xla_cpu_use_xnnpack=true": {"xla_cpu_use_xnnpack": True},
    "ynn fusions off": {YNN: ""},
    "ynn off + xnnpack dots": {
        YNN: "",
        "xla_cpu_use_xnnpack": True,
        "xla_cpu_experimental_xnn_fusion_type": T + "DOT",
    },
    "ynn individual dots only": {YNN: T + "INDIVIDUAL_DOT"},
    "ynn dot fusions only": {YNN: T + "DOT"},
    "ynn dot+eltwise": {YNN: f"{T}DOT,{T}ELTWISE"},
    "ynn dot+eltwise+reduce": {YNN: f"{T}INDIVIDUAL_DOT,{T}ELTWISE,{T}REDUCE"},
    "onednn dots (ynn on)": {
        "xla_cpu_use_onednn": True,
        "xla_cpu_experimental_onednn_fusion_type": T + "INDIVIDUAL_DOT",
    },
    "eigen single-threaded": {"xla_cpu_multi_thread_eigen": False},
    "legacy loop emitters (no fusion emitters)": {"xla_cpu_use_fusion_emitters": False},
    "fast math": {"xla_cpu_enable_fast_math": True},
    "prefer 512-bit vectors": {"xla_cpu_prefer_vector_width": 512},
    "concurrency-optimized scheduler": {"xla_cpu_enable_concurrency_optimized_scheduler": True},
    "copy insertion region analysis": {"xla_cpu_copy_insertion_use_region_analysis": True},
    "tiling propagation": {"xla_cpu_experimental_enable_tiling_propagation": True},
    "flush denormals (ftz)": {"xla_cpu_ftz": True},
    **{f"scheduler type {i}": {"xla_cpu_scheduler_type": i} for i in (1, 2, 3)},
    **{f"opt preset {i}": {"xla_cpu_opt_preset": i} for i in (1, 2, 3)},
}


def _identity(p):
    return p


def _l2_unless_zero(params, reg):
    """The L2 penalty with its sum skipped (`lax.cond`) when reg == 0; gradient reg * W as before."""

    @jax.custom_vjp
    def term(w, r):
        return jax.lax.cond(
            r == 0, lambda: jnp.zeros((), w.dtype), lambda: 0.5 * r * jnp.sum(w * w)
        )

    term.defvjp(lambda w, r: (term(w, r), (w, r)), lambda res, g: (g * res[1] * res[0], 0 * res[1]))
    weights = [v for k, v in params.items() if k.startswith("W")]
    return sum(term(w, jnp.asarray(reg, w.dtype)) for w in weights)


def _l2_vdot(params, reg):
    weights = [v for k, v in params.items() if k.startswith("W")]
    return sum(0.5 * jnp.asarray(reg, w.dtype) * jnp.vdot(w.ravel(), w.ravel()) for w in weights)


def _variant_epoch(
    to_inner, to_public, view, unroll=1, prefetch=False, guard="engine", penalty=None
):
    """An epoch like `train.scan_epoch` (adam, no dropout) with the model fed `view(inner params)`.

    guard: how a non-finite step is kept out. "engine" as `train.train_step` (the rule skips the
    step itself, the flag reads the loss and the 1-D gradients); "rule skips, loss-only flag";
    "select after, loss-only flag" (the engine before this change: old-or-new selected after the
    update, the flag from the loss alone). penalty: replaces `losses.l2_penalty` while tracing.
    """

    def step(ts, xb, yb, hp):
        def loss(q, *a, **k):
            saved = losses.l2_penalty
            losses.l2_penalty = penalty or saved
            try:
                return models.loss_fn(view(q), *a, **k)
            finally:
                losses.l2_penalty = saved

        grad_fn = jax.value_and_grad(loss, has_aux=True)
        (value, (ms, _)), g = grad_fn(ts.params, ts.model_state, xb, yb, hp, config=CONFIG)
        if guard == "engine":
            bad = ts.diverged | ~train.all_finite(value, g)
        else:
            bad = ts.diverged | ~jnp.isfinite(value)
        if guard == "select after, loss-only flag":
            params, opt_state = OPT.update(g, ts.opt_state, ts.params, hp)
            keep = lambda n, o: jax.tree.map(lambda a, b: jnp.where(bad, b, a), n, o)  # noqa: E731
            params, opt_state = keep(params, ts.params), keep(opt_state, ts.opt_state)
        else:
            params, opt_state = OPT.update(g, ts.opt_state, ts.params, hp, skip=bad)
        new = ts._replace(
            params=params, opt_state=opt_state, model_state=ms, step=ts.step + 1, diverged=bad
        )
        return new, value

    def epoch(ts, X, y, idx, hp):
        treedef, mask = train._like_params(ts.opt_state, ts.params)
        inner = ts._replace(
            params=to_inner(ts.params),
            opt_state=train._convert(ts.opt_state, treedef, mask, to_inner),
        )
        if prefetch:  # gather step t+1's minibatch inside step t (overlap with compute)

            def body(c, i):
                ts, xb, yb = c
                ts, value = step(ts, xb, yb, hp)
                return (ts, X[i], y[i]), value

            nxt = jnp.concatenate([idx[1:], idx[:1]])
            (inner, _, _), losses = jax.lax.scan(
                body, (inner, X[idx[0]], y[idx[0]]), nxt, unroll=unroll
            )
        else:
            inner, losses = jax.lax.scan(
                lambda t, i: step(t, X[i], y[i], hp), inner, idx, unroll=unroll
            )
        out = inner._replace(
            params=to_public(inner.params),
            opt_state=train._convert(inner.opt_state, treedef, mask, to_public),
        )
        return out, losses

    return jax.jit(epoch)


def _flat_layout(params):
    """All params raveled into one vector (W1 stored transposed); the model sees reshaped slices."""
    names = list(params)
    shapes = {k: (v.shape[::-1] if k == "W1" else v.shape) for k, v in params.items()}

    def to_inner(p):
        return jnp.concatenate([(p[k].T if k == "W1" else p[k]).reshape(-1) for k in names])

    def view(f, public=False):
        out, o = {}, 0
        for k in names:
            n = int(np.prod(shapes[k]))
            a = f[o : o + n].reshape(shapes[k])
            out[k] = a.T if k == "W1" else a  # the model needs (D, H1)
            o += n
        return out

    return to_inner, view, view


def variants(ts0):
    w1t = lambda p: {**p, "W1": p["W1"].T}  # noqa: E731
    engine = train.make_epoch(CONFIG, OPT)
    v = {"engine": lambda: engine}
    for name, opts in OPTIONS.items():
        v[name] = ("options", opts)
    v["public layout (no transposed W1)"] = lambda: jax.jit(
        functools.partial(
            train.scan_epoch,
            config=CONFIG,
            optimizer=OPT,
            layout=train._Layout(_identity, _identity),
        )
    )
    v["W1 stored transposed, model fed W1t.T (autodiff)"] = lambda: _variant_epoch(w1t, w1t, w1t)
    v["flat parameter buffer"] = lambda: _variant_epoch(*_flat_layout(ts0.params))
    tw = train._engine_layout(CONFIG)
    for name, penalty in (
        ("L2 sum skipped when reg == 0 (lax.cond)", _l2_unless_zero),
        ("L2 sum as vdot", _l2_vdot),
    ):
        v[f"engine layout, {name}"] = lambda penalty=penalty: _variant_epoch(
            tw.to_inner, tw.to_public, _identity, penalty=penalty
        )
    for guard in ("select after, loss-only flag", "rule skips, loss-only flag"):
        v[f"engine layout, {guard}"] = lambda guard=guard: _variant_epoch(
            tw.to_inner, tw.to_public, _identity, guard=guard
        )
    v["engine layout, scan unroll=2"] = lambda: _variant_epoch(
        tw.to_inner, tw.to_public, _identity, unroll=2
    )
    v["engine layout, scan unroll=4"] = lambda: _variant_epoch(
        tw.to_inner, tw.to_public, _identity, unroll=4
    )
    v["engine layout, prefetch next minibatch"] = lambda: _variant_epoch(
        tw.to_inner, tw.to_public, _identity, prefetch=True
    )
    return v


def profile(ts0, X, y, idx, hp):
    """Per-op time of the engine epoch from XLA:CPU's thunk TraceMe events."""
    lowered = train.make_epoch(CONFIG, OPT).lower(ts0, X, y, idx, hp)
    c = lowered.compile(compiler_options={"xla_cpu_enable_xprof_traceme": True})
    defs = {}
    for line in c.as_text().splitlines():
        m = re.match(r"\s*(?:ROOT )?%([\w.-]+) = (\S+) (\w[\w-]*)\((.*)", line)
        if m:
            defs[m.group(1)] = (m.group(2), m.group(3), m.group(4))
    c(ts0, X, y, idx, hp)[1].block_until_ready()
    d = tempfile.mkdtemp()
    with jax.profiler.trace(d, create_perfetto_trace=True):
        for _ in range(3):
            c(ts0, X, y, idx, hp)[1].block_until_ready()
    events = json.load(gzip.open(glob.glob(f"{d}/**/*.trace.json.gz", recursive=True)[0]))
    shutil.rmtree(d, ignore_errors=True)
    tot = collections.Counter()
    for e in events["traceEvents"]:
        if e.get("ph") == "X" and e["name"] in defs:
            tot[e["name"]] += e["dur"]

    def kind(name):
        shape, op, args = defs[name]
        if "gather" in name:
            return "minibatch gather"
        if shape.startswith("f32[]") or "reduce" in name or shape == "f32[100]{0}":
            return "reductions (L2 sums, bias grads, loss)"
        if op == "dot" or "ynn_fusion" in name:
            operands = [defs.get(o, ("",))[0] for o in re.findall(r"%([\w.-]+)", args)]
            wide = any("3072" in sh for sh in [shape, *operands])
            return "input-layer GEMMs" if wide else "hidden/output-layer GEMMs"
        if "compare_select" in name:
            return "other elementwise (relu, bias, loss)"
        if "select_fusion" in name:
            return "optimizer update (adam)"
        if "transpose" in name:
            return "activation transposes (for hidden dW GEMMs)"
        if op == "copy" or "copy" in name:
            return "copies (loop carry; W1 layout at entry/exit)"
        return "other elementwise (relu, bias, loss)"

    n, total, by = 3 * idx.shape[0], sum(tot.values()), collections.Counter()
    for k, t in tot.items():
        by[kind(k)] += t
    print(f"profiled op time {total / n:.0f} us/step ({n} steps)")
    for k, t in by.most_common():
        print(f"  {t / n:7.1f} us/step {100 * t / total:5.1f}%  {k}")
    for k, t in tot.most_common(int(os.environ.get("AB_TOP", 12))):
        print(f"  {t / n:7.1f} us  {k:28s} {defs[k][0]:20s} {kind(k)}")


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--only", nargs="+", help="variant names (substrings) to run besides engine")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.standard_normal((49000, 3072), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, 10, 49000).astype(np.int32))
    hp = make_hparams("adam", learning_rate=1e-3)
    ts0 = train.init_train_state(jax.random.key(0), CONFIG, OPT, 1e-2)
    idx = train.sample_indices(jax.random.key(1), 49000, args.steps, 100)
    if args.profile:
        return profile(ts0, X, y, idx, hp)
    v = variants(ts0)
    if args.only:
        v = {k: f for k, f in v.items() if k == "engine" or any(s in k for s in args.only)}
    lowered_engine = v["engine"]().lower(ts0, X, y, idx, hp)
    compiled = {}
    for name, make in v.items():
        t = time.perf_counter()
        try:
            if isinstance(make, tuple):
                c = lowered_engine.compile(compiler_options=make[1])
            else:
                lowered = make().lower(ts0, X, y, idx, hp)
                c = lowered.compile()
        except Exception as e:  # an option this jaxlib rejects
            print(f"{name}: FAILED to compile: {str(e)[:120]}")
            continue
        print(f"{name}: compile {time.perf_counter() - t:.2f} s", flush=True)
        compiled[name] = c
    reference = compiled["engine"](ts0, X, y, idx, hp)
    for name, c in compiled.items():
        ts, losses = c(ts0, X, y, idx, hp)
        assert bool(jnp.all(jnp.isfinite(losses))), name
        if "flag" in name:  # the step guards: same numbers as the engine?
            diff = max(
                float(jnp.max(jnp.abs(a - b)))
                for a, b in zip(
                    jax.tree.leaves((ts.params, ts.opt_state, losses)),
                    jax.tree.leaves((reference[0].params, reference[0].opt_state, reference[1])),
                )
            )
            print(f"{name}: params, optimizer state and losses differ from the engine's by {diff}")
    times = {k: [] for k in compiled}
    for _ in range(args.repeats):
        for name, c in compiled.items():
            t = time.perf_counter()
            c(ts0, X, y, idx, hp)[1].block_until_ready()
            times[name].append(time.perf_counter() - t)
    base = min(times["engine"])
    print(f"{'variant':52s} {'best us/step':>12s} {'median':>8s} {'best/engine':>11s}")
    for name, ts in times.items():
        best, med = min(ts) / args.steps * 1e6, sorted(ts)[len(ts) // 2] / args.steps * 1e6
        print(f"{name:52s} {best:12.0f} {med:8.0f} {min(ts) / base:11.3f}")


if __name__ == "__main__":
    main()
