"""`fc-jax gradcheck`: float64 central differences against every custom-VJP layer, loss and net.

Contract: prints the worst relative error of each check against its tolerance, then ONE JSON line;
exit 0 when every check passes, 1 otherwise (`fc_jax.gradcheck.check_all`).
"""

import json

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    g = sub.add_parser(
        "gradcheck",
        help="central differences vs every layer, loss and nets",
        description=__doc__.split("\n\n")[0],
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    g.set_defaults(func=run)


def run(args) -> int:
    from fc_jax.gradcheck import check_all

    worst = check_all(args.seed)
    print(f"{'check':<20} {'worst rel error':>16} {'tolerance':>10}")
    for name, (err, tol) in worst.items():
        print(f"{name:<20} {err:>16.3e} {tol:>10.0e} {'ok' if err <= tol else 'FAIL'}")
    ok = all(err <= tol for err, tol in worst.values())
    print(json.dumps({"gradcheck": {k: e for k, (e, _) in worst.items()}, "passed": ok}))
    return 0 if ok else 1
