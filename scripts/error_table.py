"""Print the worst relative error of every layer and loss against each oracle (float64).

Columns: forward vs the numpy reference; hand-written backward vs the reference backward; the custom VJP
vs jax.vjp of a plain-jnp forward (random cotangent); hand-written backward vs central differences.
Uses the test cases of tests/test_layers.py and tests/test_losses.py:  python scripts/error_table.py
"""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.*

from fc_jax import gradcheck  # noqa: E402
from fc_jax.reference import gradient_check
from tests.helpers import rel_error  # noqa: E402
from tests.test_layers import CASES, _tuple  # noqa: E402
from tests.test_losses import LOSSES, _data  # noqa: E402

with jax.enable_x64(True):
    print(
        f"{'layer':12s} {'fwd vs ref':>11s} {'bwd vs ref':>11s} {'bwd vs vjp':>11s} {'central':>11s}"
    )
    for name, c in sorted(CASES.items()):
        rng = np.random.default_rng(sum(map(ord, name)))
        args = c.make(rng)
        dout = rng.standard_normal(np.shape(c.plain(*args)))
        ja = tuple(map(jnp.asarray, args))
        out, cache = c.fwd(*ja)
        rout, rcache = c.ref_fwd(*args)
        g = _tuple(c.bwd(jnp.asarray(dout), cache))
        rg = _tuple(c.ref_bwd(dout, rcache))
        e_ref = max(rel_error(a, b) for a, b in zip(g, rg))
        e_vjp = max(gradcheck.check_vjp(c.fn, c.plain, ja, argnums=c.diff))
        e_num = 0
        for gi, i in zip(g, c.diff):
            f = lambda a, i=i, c=c, ja=ja: np.asarray(
                c.fn(*[jnp.asarray(a) if j == i else v for j, v in enumerate(ja)])
            )
            e_num = max(
                e_num,
                rel_error(
                    gi, gradient_check.eval_numerical_gradient_array(f, np.array(args[i]), dout)
                ),
            )
        print(f"{name:12s} {rel_error(out, rout):11.1e} {e_ref:11.1e} {e_vjp:11.1e} {e_num:11.1e}")
    for name, (fn, fwd, bwd, ref_fn, plain) in sorted(LOSSES.items()):
        s, y = _data()
        rl, rdx = ref_fn(s, y)
        l, cache = fwd(jnp.asarray(s), jnp.asarray(y))
        dx = bwd(jnp.asarray(1.0), cache)
        num = gradient_check.eval_numerical_gradient(
            lambda a, fn=fn, y=y: float(fn(jnp.asarray(a), jnp.asarray(y))), s.copy(), verbose=False
        )
        e_vjp = max(gradcheck.check_vjp(fn, plain, (jnp.asarray(s), jnp.asarray(y)), argnums=[0]))
        print(
            f"{name + '_loss':12s} {rel_error(l, rl):11.1e} {rel_error(dx, rdx):11.1e} {e_vjp:11.1e} {rel_error(dx, num):11.1e}"
        )
