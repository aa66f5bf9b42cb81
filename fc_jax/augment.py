"""Data augmentation on the device, inside the scanned epoch: crops, flips, mixup.

Contract: an `Augment(image_shape, crop_pad, flip, mixup)` is structure (hashable, static under
jit); mixup's strength is a value, `hparams.mixup_alpha`. `augment_batch(key, X, y, rows,
hparams, aug)` turns minibatch `rows` of the flattened, mean-subtracted training set X (N, D)
and its labels y into what the step trains on, `(xb, yb, mix)`, where `mix` is None or
`(yb[perm], lam)` for the loss
(`lam * loss(y) + (1 - lam) * loss(y[perm])`, exact for cross-entropy with integer labels). The
randomness is drawn apart from the arithmetic so tests can feed their own draws:

* `crop_flip_draws(key, batch, pad, flip)` -> (offsets (B, 2) int32 in [0, 2 * pad], flips (B,)
  bool); `crop_flip(x, offsets, flips, image_shape, pad)`: each image (C, H, W) zero-padded by
  `pad` pixels on every side, cropped back to (H, W) at its offset (rows, columns), then mirrored
  left-right where `flips` says. Zero is the mean image here (the rows are mean-subtracted).
* `mixup_draws(key, batch, alpha, dtype)` -> (perm (B,) int32, lam ()): one weight per minibatch,
  `lam ~ Beta(alpha, alpha)`, and exactly 1 when `alpha` is 0 (that lane is not mixed); the
  partner of example j is example B - 1 - j (the minibatch's order is already random);
  `mix_inputs(x, perm, lam) = lam * x + (1 - lam) * x[perm]`.

The keys of one step are `fold_in(key, 0)` (crops), `fold_in(key, 1)` (flips), `fold_in(key, 2)`
(mixup's weight). When `key` and `x` are the same for every lane of a vmapped sweep, so is everything drawn
from them: crops and flips stay one computation and the lanes still read one input batch. Mixup's
weight depends on each lane's alpha, so with mixup on the mixed batch is per lane.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fc_jax.hparams import HParams
from fc_jax.types import Array, Key

__all__ = [
    "Augment",
    "crop_flip_draws",
    "crop_flip",
    "crop_flip_rows",
    "mixup_draws",
    "mix_inputs",
    "augment_batch",
]


class Augment(NamedTuple):
    """What the epoch does to each minibatch (structure; mixup's alpha is `hparams.mixup_alpha`)."""

    image_shape: tuple[int, ...] | None = None  # (C, H, W) of one row; needed by crops and flips
    crop_pad: int = 0  # random crops of the image zero-padded by this many pixels; 0 = none
    flip: bool = False  # random horizontal flips
    mixup: bool = False  # mixup present (some lane's alpha > 0)

    @property
    def active(self) -> bool:
        return bool(self.crop_pad or self.flip or self.mixup)


def crop_flip_draws(key: Key, batch: int, pad: int, flip: bool) -> tuple[Array, Array]:
    """(offsets (batch, 2) int32 in [0, 2 * pad], flips (batch,) bool) for `crop_flip`."""
    offsets = jax.random.randint(jax.random.fold_in(key, 0), (batch, 2), 0, 2 * pad + 1)
    flips = (
        jax.random.bernoulli(jax.random.fold_in(key, 1), 0.5, (batch,))
        if flip
        else jnp.zeros((batch,), jnp.bool_)
    )
    return offsets.astype(jnp.int32), flips


def crop_flip(x: Array, offsets: Array, flips: Array, image_shape, pad: int) -> Array:
    """Crops of the zero-padded images, then left-right mirrors (see the module docstring).

    Args:
      x: (B, D) rows, each a flattened (C, H, W) image.
      offsets: (B, 2) int32, the crop's top-left corner in the padded image (row, column).
      flips: (B,) bool.
      image_shape: (C, H, W).
      pad: zero padding on each side (0: no crop; offsets are then ignored).

    Returns:
      (B, D) rows.
    """
    return crop_flip_rows(x, jnp.arange(x.shape[0]), offsets, flips, image_shape, pad)


def crop_flip_rows(
    X: Array, rows: Array, offsets: Array, flips: Array, image_shape, pad: int
) -> Array:
    """`crop_flip(X[rows], ...)` as ONE gather from the whole (N, D) training set.

    Output pixel (c, h, w) of example b reads X[rows[b]] at (c, h + dy - pad, w' + dx - pad),
    w' = W - 1 - w when flipped (else w), or is 0 outside the image. One gather of B * D
    elements replaces the minibatch's own gather, so crops and flips cost the index arithmetic
    and the scattered reads (their cost on a W1 epoch: benchmarks/RESULTS.md).
    """
    C, H, W = image_shape
    D = C * H * W
    B = rows.shape[0]
    f = flips.astype(jnp.int32)[:, None, None]
    h = jnp.arange(H, dtype=jnp.int32)[None, :, None]
    w = jnp.arange(W, dtype=jnp.int32)[None, None, :]
    src_h = h + offsets[:, 0, None, None] - pad  # (B, H, 1)
    # w' = W - 1 - w when flipped, as arithmetic (a select here made the step measurably slower)
    src_w = w * (1 - 2 * f) + (W - 1) * f + offsets[:, 1, None, None] - pad  # (B, 1, W)
    pixel = jnp.clip(src_h, 0, H - 1) * W + jnp.clip(src_w, 0, W - 1)  # (B, H, W)
    base = rows.astype(jnp.int32)[:, None, None] * D + pixel
    flat = base[:, None] + jnp.arange(C, dtype=jnp.int32)[None, :, None, None] * (H * W)
    out = X.reshape(-1)[flat.reshape(B, D)]
    if not pad:
        return out
    inside = (src_h >= 0) & (src_h < H) & (src_w >= 0) & (src_w < W)  # (B, H, W)
    inside = jnp.broadcast_to(inside[:, None], (B, C, H, W)).reshape(B, D)
    return jnp.where(inside, out, jnp.zeros((), X.dtype))


def mixup_draws(key: Key, batch: int, alpha: Array, dtype) -> tuple[Array, Array]:
    """(perm (batch,) int32, lam () in `dtype`): lam ~ Beta(alpha, alpha), 1 when alpha is 0.

    The partner of example j is example `batch - 1 - j` (the batch reversed, as timm's mixup
    pairs them): the minibatch's own order is random, so the pairs are too, with no permutation
    to draw (a sort; a W1 epoch was slower with it: benchmarks/RESULTS.md).
    """
    a = jnp.asarray(alpha, dtype)
    safe = jnp.where(a > 0, a, jnp.ones((), dtype))
    lam = jax.random.beta(jax.random.fold_in(key, 2), safe, safe, (), dtype)
    perm = jnp.arange(batch - 1, -1, -1, dtype=jnp.int32)
    return perm, jnp.where(a > 0, lam, jnp.ones((), dtype))


def mix_inputs(x: Array, perm: Array, lam: Array) -> Array:
    """`lam * x + (1 - lam) * x[perm]`: the mixed minibatch."""
    return lam * x + (1 - lam) * x[perm]


def augment_batch(
    key: Key, X: Array, y: Array, rows: Array, hparams: HParams, aug: Augment
) -> tuple[Array, Array, tuple[Array, Array] | None]:
    """Minibatch `rows` of (X, y) as the step trains on it: `(xb, yb, mix)`; `mix` is None or,
    with mixup, `(yb[perm], lam)`. Crops and flips gather straight from X (`crop_flip_rows`)."""
    yb = y[rows]
    if aug.crop_pad or aug.flip:
        offsets, flips = crop_flip_draws(key, rows.shape[0], aug.crop_pad, aug.flip)
        pick = lambda r, o, f: crop_flip_rows(X, r, o, f, aug.image_shape, aug.crop_pad)  # noqa: E731
        xb = pick(rows, offsets, flips)
        partner = lambda: pick(rows[::-1], offsets[::-1], flips[::-1])  # noqa: E731
    else:
        xb = X[rows]
        partner = lambda: X[rows[::-1]]  # noqa: E731
    if not aug.mixup:
        return xb, yb, None
    _, lam = mixup_draws(key, rows.shape[0], hparams.mixup_alpha, xb.dtype)
    # the partners gathered again from X, reversed: on XLA:CPU a second gather costs far less than
    # reversing the gathered batch (xb[::-1]) (benchmarks/RESULTS.md, "Augmentation and mixup")
    return lam * xb + (1 - lam) * partner(), yb, (yb[::-1], lam)
