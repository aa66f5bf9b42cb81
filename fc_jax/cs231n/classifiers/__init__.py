"""cs231n `classifiers`: `TwoLayerNet` and `FullyConnectedNet` (see `fc_net`) over the core."""

from fc_jax.cs231n.classifiers.fc_net import FullyConnectedNet, TwoLayerNet

__all__ = ["FullyConnectedNet", "TwoLayerNet"]
