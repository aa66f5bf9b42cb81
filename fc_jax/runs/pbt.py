"""Population-based training: the exploit/explore step between epochs, a gather over the lane axis.

Contract: `exploit(lanes, pbt, seed, epoch)` is one PBT step on a `fc_jax.runs.lanes.Lanes` whose
lanes all finished `epoch` epochs (diverged lanes may be behind). The lanes are ranked by their
last validation accuracy (a diverged lane last); each of the worst `n = floor(K * quantile)` lanes
copies the state of a lane drawn uniformly from the best `n`: parameters, optimizer state,
batchnorm statistics, step count, divergence flag, epochs done, best-tracking (best params, their
statistics, accuracy and epoch), as `tree[source_index]`, a gather with the same K; its own
dropout key stays, so the copy does not repeat the source's masks. Then each hyperparameter in
`pbt.names` of a copied lane becomes the source's value times 0.8 or 1.2, clipped to the valid
range of `fc_jax.hparams.HPARAMS` (`perturb`), in the hyperparameters' own dtype: the lanes' shapes
and dtypes never change, so the compiled epoch runs on unchanged (hyperparameters are data).

Every decision is a pure function of (seed, epoch, the accuracies), drawn from
`np.random.default_rng([seed, epoch, PBT_STREAM])`, so a resumed run decides exactly as an
uninterrupted one. (No step follows the last epoch: a finished run resumed with more epochs goes
on without the step an uninterrupted longer run would have taken there, when that epoch is a
multiple of `ready`.) Each copy is recorded in `Lanes.lineage` as
`{"epoch", "lane", "source", "source_val_acc", "lane_val_acc", "values"}` (the new values of the
perturbed names).
"""

import jax
import numpy as np

from fc_jax.hparams import HPARAMS, HParams
from fc_jax.runs.schedule import Pbt

__all__ = ["exploit", "perturb", "clip_to_range", "due", "PBT_STREAM", "FACTORS"]

PBT_STREAM = 0x9B7  # the tag of PBT's random stream, apart from minibatches and subsamples
FACTORS = (0.8, 1.2)


def due(pbt: Pbt | None, epoch: int, num_epochs: int) -> bool:
    """Whether a PBT step follows epoch `epoch` (1-based count of epochs done)."""
    return pbt is not None and epoch % pbt.ready == 0 and epoch < num_epochs


def clip_to_range(name: str, values, dtype) -> np.ndarray:
    """`values` clipped into the valid range of hyperparameter `name`, in `dtype` (an open end is
    replaced by the nearest representable value inside it)."""
    row, dt = HPARAMS[name], np.dtype(dtype)
    lo, hi = dt.type(row.low), dt.type(row.high)
    if not row.low_closed:
        lo = np.nextafter(lo, dt.type(np.inf))
    if not row.high_closed and np.isfinite(hi):
        hi = np.nextafter(hi, dt.type(-np.inf))
    return np.clip(np.asarray(values, dt), lo, hi)


def perturb(values, factors, name: str) -> np.ndarray:
    """`values * factors` clipped to `name`'s valid range, computed in float64, returned in the
    dtype of `values`."""
    v = np.asarray(values)
    return clip_to_range(name, v.astype(np.float64) * np.asarray(factors), v.dtype)


def _gather(tree, index):
    return jax.tree.map(lambda a: np.asarray(a)[index], tree)


def _pad_history(h: dict, epochs: int, steps: int) -> dict:
    """A diverged lane's history filled with NaN up to `epochs` epochs (it rejoins there)."""
    h = {k: list(v) for k, v in h.items()}
    missing = epochs - len(h["val_acc"])
    for k in ("train_acc", "val_acc", "lr"):
        h[k] += [float("nan")] * missing
    h["epoch_seconds"] += [0.0] * missing
    h["loss"] += [float("nan")] * (epochs * steps - len(h["loss"]))
    return h


def exploit(lanes, pbt: Pbt, seed: int, epoch: int):
    """One PBT step after `epoch` epochs (see the module docstring); returns the new `Lanes`.

    `lanes.hparams` must hold the lanes' current `HParams` ((K,) numpy arrays).
    """
    K = lanes.num_lanes
    n = int(K * pbt.quantile)
    last = np.asarray([h["val_acc"][-1] if h["val_acc"] else np.nan for h in lanes.history])
    acc = np.where(np.isfinite(last) & ~lanes.diverged, last, -np.inf)
    if n < 1 or not np.isfinite(acc).any():
        return lanes
    order = np.argsort(-acc, kind="stable")
    top, bottom = order[:n], np.sort(order[K - n :])
    rng = np.random.default_rng([int(seed), int(epoch), PBT_STREAM])
    sources = top[rng.integers(0, n, size=n)]
    factors = rng.choice(FACTORS, size=(n, len(pbt.names)))
    keep = np.isfinite(acc[sources])  # never copy a lane without an accuracy
    bottom, sources, factors = bottom[keep], sources[keep], factors[keep]
    index = np.arange(K)
    index[bottom] = sources
    ts = _gather(lanes.ts, index)._replace(key=np.asarray(lanes.ts.key))  # own dropout keys
    hp = _gather(lanes.hparams, index)
    new = {}
    for j, name in enumerate(pbt.names):
        column = np.array(getattr(hp, name), copy=True)
        column[bottom] = perturb(column[bottom], factors[:, j], name)
        new[name] = column
    hp = hp._replace(**new)
    steps = max(
        (len(h["loss"]) // len(h["val_acc"]) for h in lanes.history if h["val_acc"]), default=0
    )
    history = list(lanes.history)
    events = []
    for dest, src in zip(bottom.tolist(), sources.tolist(), strict=True):
        if len(history[dest]["val_acc"]) < epoch:
            history[dest] = _pad_history(history[dest], epoch, steps)
        events.append(
            {
                "epoch": int(epoch),
                "lane": dest,
                "source": src,
                "source_val_acc": float(last[src]),
                "lane_val_acc": float(last[dest]) if np.isfinite(last[dest]) else None,
                "values": {name: float(getattr(hp, name)[dest]) for name in pbt.names},
            }
        )
    return lanes._replace(
        ts=ts,
        epoch=lanes.epoch[index],
        history=history,
        best_params=_gather(lanes.best_params, index),
        best_model_state=_gather(lanes.best_model_state, index),
        best_val_acc=lanes.best_val_acc[index],
        best_epoch=lanes.best_epoch[index],
        hparams=HParams(*hp),
        lineage=(*lanes.lineage, *events),
    )
