"""cs231n compatibility facade: the assignment's file tree and mutable API over the JAX core.

Contract: a course notebook runs unchanged after replacing `cs231n.` with `fc_jax.cs231n.` in its
imports (`from fc_jax.cs231n.layers import *`, `from fc_jax.cs231n.classifiers.fc_net import *`,
`from fc_jax.cs231n.optim import adam`, ...) and prints the same numbers. This package is the only
part of fc_jax with mutation (config dicts, `bn_param`, `model.params`) and NumPy's global RNG
(weight initialization, dropout masks). Submodules are imported explicitly, as the course does;
nothing is imported here.

Modules: `layers`, `layer_utils`, `optim`, `gradient_check`, `classifiers.fc_net` (and
`solver`, `data_utils`).
"""

__all__: list[str] = []
