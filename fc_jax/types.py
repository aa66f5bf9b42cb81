"""Type aliases used across fc_jax (aliases only, no logic)."""

from typing import Any

import jax

__all__ = ["Array", "Params", "ModelState", "Grads", "Key", "PyTree"]

Array = jax.Array
Params = dict[str, Array]  # flat cs231n names: W1, b1, gamma1, beta1, ...
ModelState = dict[str, Array]  # batchnorm running stats: running_mean1, running_var1, ...
Grads = dict[str, Array]  # same keys as Params
Key = jax.Array  # a typed PRNG key from jax.random.key(seed)
PyTree = Any
