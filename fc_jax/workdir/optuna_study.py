"""An Optuna study over lanes, as `fc_jax.workdir.sweeping.sweep_in` runs it for a sampler.

Contract: a study's *plan* (`fc_jax.cli.study.plan` builds it from the flags) is a JSON-ready dict:
sampler, trials, lanes, study URL and name, pruner, seed, the search space as a random spec and the
fixed values. `require_optuna(sampler)` refuses a sampler whose packages are missing, in one line;
`dropout_of(plan)` says whether the net needs dropout layers; `run_study` asks, trains and tells
the trials with `fc_jax.runs.optuna_bridge.optimize`. Optuna is optional (`pip install -e
".[optuna]"`) and imported only here, when a sweep asks for a sampler.
"""

from fc_jax.runs import space
from fc_jax.workdir.winner import save_models

__all__ = ["require_optuna", "dropout_of", "run_study"]

_INSTALL = 'pip install -e ".[optuna]"'


def require_optuna(sampler: str) -> None:
    """ValueError (one line) when Optuna, or cmaes for the "cmaes" sampler, cannot be imported."""
    try:
        import optuna  # noqa: F401  (an optional dependency)

        if sampler == "cmaes":
            import cmaes  # noqa: F401
    except ImportError:
        raise ValueError(f"--sampler needs Optuna: {_INSTALL}") from None


def _study_space(p: dict) -> dict:
    return space.random_space({"random": {"n": 1, "params": p["space"]}})[2]


def dropout_of(p: dict) -> bool:
    """Whether the net of an Optuna plan `p` needs dropout layers: some trial may keep less than 1."""
    d = _study_space(p).get("keep_prob")
    low = min(d.values) if isinstance(d, space.Choice) else d.lo if d else 1.0
    return low < 1 or p["fixed"].get("keep_prob", 1.0) < 1


def run_study(s, config, data, opts, out, meta, context):
    """Run the Optuna study of `opts["optuna"]` over lanes (`fc_jax.workdir.sweeping.sweep_in`
    with an Optuna plan) on `meta["schedule"]`; returns (its `SweepResult`, the study's entries
    of the summary).

    `context`: lead (whether this process writes), log, note."""
    import optuna  # an optional dependency: imported when a sweep asks for a sampler

    from fc_jax.runs import optuna_bridge as bridge

    p, lead = opts["optuna"], context["lead"]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = bridge.open_study(p["study"], p["study_name"], pruner=bridge.make_pruner(p["pruner"]))
    context["note"](
        f"Optuna study {p['study_name']!r} in {p['study']} ({p['sampler']}, {p['trials']} "
        f"trials, {p['lanes']} lanes at a time); watch it with: optuna-dashboard {p['study']}"
    )
    save = None
    if lead:
        save = lambda numbers, res: save_models(res, data, out, s)
    result = bridge.optimize(
        config,
        data,
        study,
        _study_space(p),
        p["trials"],
        lanes=p["lanes"],
        fixed=p["fixed"],
        # a checkpoint after every epoch: an interrupted batch resumes from it
        schedule=meta["schedule"]._replace(checkpoint_every=0.0),
        optimizer=s["update_rule"],
        sampler=p["sampler"],
        sampler_seed=p["seed"],
        max_lanes=opts["max_lanes"],
        out_dir=out if lead else None,
        meta={k: v for k, v in meta.items() if k not in ("config", "schedule")},
        on_batch_end=save,
        log=context["log"],
    )
    if not len(result.trials):
        raise ValueError(f"study {p['study_name']!r} holds no trials trained by fc-jax")
    extra = {
        "sampler": p["sampler"],
        "study": p["study"],
        "study_name": p["study_name"],
        "dashboard": f"optuna-dashboard {p['study']}",
    }
    return result, extra
