"""cs231n `gradient_check.py`: numerical gradients by centered differences.

Contract: `eval_numerical_gradient(f, x, verbose=True, h=1e-5)`,
`eval_numerical_gradient_array(f, x, df, h=1e-5)` and `rel_error(x, y)` are `fc_jax.gradcheck`'s
(the course's semantics: `x` is perturbed in place and restored). `grad_check_sparse(f, x,
analytic_grad, num_checks=10, h=1e-5)` is the course's: it prints the numerical and analytic
gradients and their relative error at `num_checks` entries drawn with Python's `random.randrange`.
Use float64 inputs: with h = 1e-5, float32 round-off swamps the differences.
"""

from random import randrange

from fc_jax.reference.gradient_check import (
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    rel_error,
)

__all__ = [
    "eval_numerical_gradient",
    "eval_numerical_gradient_array",
    "rel_error",
    "grad_check_sparse",
]


def grad_check_sparse(f, x, analytic_grad, num_checks=10, h=1e-5):
    """Compare `analytic_grad` with centered differences of `f` at random entries of `x` (prints).

    Args:
      f: scalar function of one array argument.
      x: the array at which to check (perturbed in place and restored).
      analytic_grad: array with x's shape.
      num_checks: how many random entries to check.
      h: step size.
    """
    for _ in range(num_checks):
        ix = tuple(randrange(m) for m in x.shape)
        oldval = x[ix]
        x[ix] = oldval + h
        fxph = f(x)  # f(x + h)
        x[ix] = oldval - h
        fxmh = f(x)  # f(x - h)
        x[ix] = oldval  # reset
        grad_numerical = (fxph - fxmh) / (2 * h)
        grad_analytic = analytic_grad[ix]
        rel = abs(grad_numerical - grad_analytic) / (abs(grad_numerical) + abs(grad_analytic))
        print(f"numerical: {grad_numerical:f} analytic: {grad_analytic:f}, relative error: {rel:e}")
