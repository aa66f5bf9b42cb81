"""Datasets as host-side numpy arrays; never imports jax.

datasets   the table of datasets (name, sizes, input_dim, pixel_scale) and `get_dataset`
cifar10    the CIFAR-10 python-pickle batch files: reading and checking one (`DataError`)
download   where CIFAR-10 lives (`cifar10_dir`, the user cache) and how it gets there
whiten     ZCA whitening computed from the training split (`zca_matrix`, `whiten`)
"""

__all__ = ["cifar10", "datasets", "download", "whiten"]
