"""Would successive halving have stopped a full sweep's winner? A replay, without a second sweep.

Contract: `replay_halving(result, eta, min_epochs)` replays successive halving's decisions
(`fc_jax.runs.lanes.promote`: at each rung the best 1/eta of the configurations still in, ranked by
the mean over their seeds of the best validation accuracy so far, go on) on the per-epoch
validation accuracies of a full sweep (`SweepResult`, schedule "full"). A halving sweep of the
same trials trains each lane exactly as the full sweep does up to where it stops (same seeds and
minibatches; `tests/test_sweep.py` checks it), so the replay is what that halving sweep would have
decided. It returns `{"rungs", "kept" (configurations going on after each rung), "winner",
"stopped_at" (the rung that stopped the winner, or None), "rank", "of", "went_on"}`;
`halving_line` says it in one line for the sweep's output.
"""

import numpy as np

from fc_jax.runs.schedule import Halving, group_means, lane_scores, rung_budgets

__all__ = ["replay_halving", "halving_line"]


def replay_halving(result, eta: int = 3, min_epochs: int = 1) -> dict:
    """Halving's decisions replayed on a full sweep (see the module docstring)."""
    val = np.asarray(result.history["val_acc"], float)  # (K, E), NaN once a lane diverged
    K, E = val.shape
    groups, winner = result.groups, int(result.best_configuration)
    rungs = rung_budgets(E, Halving(eta, min_epochs))
    alive = np.unique(groups)
    kept, out = [], {"stopped_at": None, "rank": None, "of": None, "went_on": None}
    for r in rungs[:-1]:
        seen = val[:, :r]
        has = np.isfinite(seen).any(axis=1)
        best = np.where(has, np.nanmax(np.where(np.isfinite(seen), seen, -np.inf), axis=1), -1.0)
        score = group_means(lane_scores(best), groups)
        out_by_r = np.asarray(result.diverged) & (np.asarray(result.epochs) <= r)
        members = np.unique(groups[np.isin(groups, alive) & ~out_by_r])
        if not len(members):
            break
        order = members[np.argsort(-score[members], kind="stable")]
        n = max(1, len(members) // eta)
        alive = order[:n]
        kept.append(sorted(alive.tolist()))
        if winner not in alive and out["stopped_at"] is None:
            ranks = order.tolist()
            out.update(
                stopped_at=r,
                rank=ranks.index(winner) + 1 if winner in ranks else None,
                of=len(members),
                went_on=n,
            )
    return {"rungs": rungs, "kept": kept, "winner": winner, **out}


def halving_line(result, eta: int = 3, min_epochs: int = 1) -> str:
    """One line: would successive halving (eta, min_epochs) have kept this full sweep's winner?"""
    v = replay_halving(result, eta, min_epochs)
    what = "configuration" if result.seeds > 1 else "trial"
    head = f"halving check (eta {eta}, rungs {v['rungs']}): successive halving would have"
    if v["stopped_at"] is None:
        return f"{head} kept the winner ({what} {v['winner']}) to the end"
    rank = f"ranked {v['rank']} of {v['of']}" if v["rank"] else "diverged"
    return (
        f"{head} stopped the winner ({what} {v['winner']}) after epoch {v['stopped_at']}: "
        f"{rank}, {v['went_on']} went on"
    )
