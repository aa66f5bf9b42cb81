"""Single-op A/Bs behind the engine's layout and its limits on XLA:CPU (issue #9).

Each probe is a `lax.scan` of `--steps` iterations compiled once, then timed round-robin with its
group for `--repeats` rounds (best time per iteration kept). Operands that an epoch streams (the
minibatches) come from a (steps, ...) array, as in the engine; weights stay resident.

  gemm     the W1 net's input-layer products (batch 100, D 3072, H1 100) in each orientation
  gather   the minibatch gather `X[idx]` (100 random rows of 49000 x 3072) and its variants,
           against a contiguous 100-row read (the memory floor)
  small    a chain of 10 n x n x n GEMMs: where XLA:CPU starts to use both cores
           (run again under `taskset -c 0` to see one core's figures)
  chains   one chain of 10 100^3 GEMMs against two independent chains: whether XLA:CPU runs
           independent ops at the same time
  bf16     the [2048, 1024] batch-200 net's products in bfloat16 (float32 accumulation) in each
           orientation the affine layers could use, against float32: which ones XLA:CPU runs
           on its fast bfloat16 path (`fc_jax.layers._transposed`)
  solver   what the course `Solver` adds to an epoch of the engine: its epoch runs as a 1-step
           call (the course's first-iteration check) and a 489-step call, then two accuracy
           checks of 1000 rows in batches of 100 (times per call, not per iteration)

    python benchmarks/ab_ops.py                 # all probes
    python benchmarks/ab_ops.py --only small chains
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

B, D, H = 100, 3072, 100


def _dot(a, b, ca, cb):
    return lax.dot_general(a, b, (((ca,), (cb,)), ((), ())))


def _scan(f, xs, length):
    """jit of a scan whose carry is a scalar that each iteration's output feeds (nothing is elided)."""

    def run(*args):
        def body(c, i):
            out = f(c, i, *args)
            return c + out.reshape(-1)[0] * 1e-30, None

        return lax.scan(body, jnp.zeros(()), jnp.arange(length))[0]

    return jax.jit(run).lower(*xs).compile()


def gemm_probes(steps, rng):
    X = jnp.asarray(rng.standard_normal((steps, B, D), dtype=np.float32))
    G = jnp.asarray(rng.standard_normal((steps, B, H), dtype=np.float32))
    Wt = jnp.asarray(rng.standard_normal((H, D), dtype=np.float32))
    flops = 2 * B * D * H
    cases = {
        "forward x @ W1t.T -> (B, H1)": lambda c, i, X, G, W: _dot(X[i], W, 1, 1),
        "forward W1t @ x.T -> (H1, B) (engine)": lambda c, i, X, G, W: _dot(W, X[i], 1, 1),
        "forward x @ W1 (public (D, H1) layout)": lambda c, i, X, G, W: X[i] @ W.reshape(D, H),
        "dW1t = dout.T @ x (engine)": lambda c, i, X, G, W: _dot(G[i], X[i], 0, 0),
        "dW1t from a materialized dout.T": lambda c, i, X, G, W: jnp.swapaxes(G[i], 0, 1) @ X[i],
        "dW1 = x.T @ dout (public layout)": lambda c, i, X, G, W: _dot(X[i], G[i], 0, 0),
    }
    return {k: (_scan(f, (X, G, Wt), steps), (X, G, Wt), flops) for k, f in cases.items()}


def bf16_probes(steps, rng):
    from fc_jax.layers import _transposed

    bf, f32, Bb, D1, H1, H2 = jnp.bfloat16, jnp.float32, 200, 3072, 2048, 1024

    def arr(*shape):
        return jnp.asarray(rng.standard_normal(shape, dtype=np.float32)).astype(bf)

    X, G1, G2 = arr(steps, Bb, D1), arr(steps, Bb, H1), arr(steps, Bb, H2)
    W1, W1t, W2 = arr(D1, H1), arr(H1, D1), arr(H1, H2)

    def dot(a, b, ca, cb, dtype=f32):
        return lax.dot_general(a, b, (((ca,), (cb,)), ((), ())), preferred_element_type=dtype)

    f1, f2 = 2 * Bb * D1 * H1, 2 * Bb * H1 * H2
    cases = {
        "forward W1t . x^T (engine)": (
            lambda c, i, X, G1, G2, W1, W1t, W2: dot(W1t, X[i], 1, 1),
            f1,
        ),
        "forward x @ W1": (lambda c, i, X, G1, G2, W1, W1t, W2: dot(X[i], W1, 1, 0), f1),
        "dx = dout @ W1t (engine)": (
            lambda c, i, X, G1, G2, W1, W1t, W2: dot(G1[i], W1t, 1, 0),
            f1,
        ),
        "dW1 = x.T @ dout (batch axis contracted)": (
            lambda c, i, X, G1, G2, W1, W1t, W2: dot(X[i], G1[i], 0, 0),
            f1,
        ),
        "dW1 from _transposed(x) (engine)": (
            lambda c, i, X, G1, G2, W1, W1t, W2: dot(_transposed(X[i]), G1[i], 1, 0),
            f1,
        ),
        "dW1t = dout.T @ x (batch axis contracted)": (
            lambda c, i, X, G1, G2, W1, W1t, W2: dot(G1[i], X[i], 0, 0),
            f1,
        ),
        "dW1t from _transposed(dout) (engine)": (
            lambda c, i, X, G1, G2, W1, W1t, W2: dot(_transposed(G1[i]), X[i], 1, 0),
            f1,
        ),
        "hidden dx = dout @ W2.T": (lambda c, i, X, G1, G2, W1, W1t, W2: dot(G2[i], W2, 1, 1), f2),
        "hidden dx = (W2 . dout^T)^T (engine)": (
            lambda c, i, X, G1, G2, W1, W1t, W2: dot(W2, G2[i], 1, 1).T,
            f2,
        ),
        "float32: dW1 = x.T @ dout": (
            lambda c, i, X, G1, G2, W1, W1t, W2: dot(X[i].astype(f32), G1[i].astype(f32), 0, 0),
            f1,
        ),
        "float32: forward x @ W1": (
            lambda c, i, X, G1, G2, W1, W1t, W2: dot(X[i].astype(f32), W1.astype(f32), 1, 0),
            f1,
        ),
    }
    xs = (X, G1, G2, W1, W1t, W2)
    return {k: (_scan(f, xs, steps), xs, flops) for k, (f, flops) in cases.items()}


def gather_probes(steps, rng):
    n = 49000
    X = jnp.asarray(rng.standard_normal((n, D), dtype=np.float32))
    idx = jnp.asarray(rng.integers(0, n, (steps, B)).astype(np.int32))
    use = lambda xb: jnp.sum(xb)  # noqa: E731  (reads every gathered element)
    cases = {
        "X[idx] (engine)": lambda c, i, X, I: use(X[I[i]]),
        "X.at[idx].get(mode='clip')": lambda c, i, X, I: use(X.at[I[i]].get(mode="clip")),
        "X.at[idx].get(mode='promise_in_bounds')": lambda c, i, X, I: use(
            X.at[I[i]].get(mode="promise_in_bounds")
        ),
        "X[sort(idx)] (reorders the batch)": lambda c, i, X, I: use(X[jnp.sort(I[i])]),
        "contiguous 100 rows (memory floor)": lambda c, i, X, I: use(
            lax.dynamic_slice_in_dim(X, I[i][0] % (n - B), B, 0)
        ),
    }
    return {k: (_scan(f, (X, idx), steps), (X, idx), None) for k, f in cases.items()}


def _chains(c, i, *xs):
    """One chain of 10 GEMMs by the last operand (w) for each other operand, independent."""
    outs = []
    for x in xs[:-1]:
        for _ in range(10):
            x = jnp.maximum(x @ xs[-1], 0) * 0.1 + c
        outs.append(x)
    return sum(o[0, 0] for o in outs)


def small_probes(steps, rng):
    out = {}
    for n in (100, 128, 192, 256):
        x = jnp.asarray(rng.standard_normal((n, n), dtype=np.float32))
        w = jnp.asarray(rng.standard_normal((n, n), dtype=np.float32)) / n
        out[f"10 chained {n}^3 GEMMs"] = (_scan(_chains, (x, w), steps), (x, w), 10 * 2 * n**3)
    return out


def chain_probes(steps, rng):
    x = jnp.asarray(rng.standard_normal((100, 100), dtype=np.float32))
    w = jnp.asarray(rng.standard_normal((100, 100), dtype=np.float32)) / 100
    one = (_scan(_chains, (x, w), steps), (x, w), 10 * 2 * 100**3)
    two = (_scan(_chains, (x, x + 1, w), steps), (x, x + 1, w), 20 * 2 * 100**3)
    return {"one chain of 10 GEMMs": one, "two independent chains of 10": two}


def solver_probes(steps, rng):
    del steps  # whole calls: an epoch is 490 steps
    from fc_jax import models, optim, train
    from fc_jax.cs231n.solver import _build_count
    from fc_jax.hparams import make_hparams

    cfg, opt = models.NetConfig((100,) * 4), optim.get_optimizer("adam")
    n = 49000
    X = jnp.asarray(rng.standard_normal((n, D), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, 10, n).astype(np.int32))
    ts = train.init_train_state(jax.random.key(0), cfg, opt, 1e-2)
    idx = train.sample_indices(jax.random.key(1), n, 490, B)
    hp = make_hparams("adam", learning_rate=1e-3)
    epoch = train.make_epoch(cfg, opt)
    mask = jnp.asarray(rng.integers(0, n, 1000).astype(np.int32))
    count = jax.jit(_build_count(cfg, 100, 1000, True))

    def split():
        t, _ = epoch(ts, X, y, idx[:1], hp)
        return epoch(t, X, y, idx[1:], hp)[1]

    return {
        "engine epoch, one call of 490 steps": (lambda: epoch(ts, X, y, idx, hp)[1], (), None),
        "the Solver's split: 1 + 489 steps": (split, (), None),
        "one 1-step call": (lambda: epoch(ts, X, y, idx[:1], hp)[1], (), None),
        "accuracy check, 1000 of 49000 rows": (
            lambda: count(ts.params, ts.model_state, X, y, mask),
            (),
            None,
        ),
    }


PROBES = {
    "gemm": gemm_probes,
    "gather": gather_probes,
    "small": small_probes,
    "chains": chain_probes,
    "bf16": bf16_probes,
    "solver": solver_probes,
}


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--only", nargs="+", choices=list(PROBES), default=list(PROBES))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"devices: {jax.devices()}; {args.steps} iterations per timing, best of {args.repeats}")
    for group in args.only:
        probes = PROBES[group](args.steps, rng)
        per = 1 if group == "solver" else args.steps  # solver probes time whole calls
        best = {k: float("inf") for k in probes}
        for c, xs, _ in probes.values():
            c(*xs).block_until_ready()  # compile / warm up
        for _ in range(args.repeats):
            for k, (c, xs, _) in probes.items():
                t = time.perf_counter()
                c(*xs).block_until_ready()
                best[k] = min(best[k], (time.perf_counter() - t) / per)
        unit = "us/call" if group == "solver" else "us/iter"
        print(f"\n[{group}]\n  {'probe':50s} {unit:>9s} {'GFLOP/s':>8s}")
        for k, (_, _, flops) in probes.items():
            rate = f"{flops / best[k] / 1e9:8.1f}" if flops else f"{'':8s}"
            print(f"  {k:50s} {best[k] * 1e6:9.1f} {rate}")


if __name__ == "__main__":
    main()
