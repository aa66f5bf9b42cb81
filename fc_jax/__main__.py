"""`python -m fc_jax` runs the command-line interface."""

from fc_jax.cli import console

console()
