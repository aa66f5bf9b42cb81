"""The schedule every lane of a run shares: epochs, minibatches, subsamples, learning rates, rungs.

Contract: a `Schedule` (a NamedTuple of plain values, saved with a checkpoint) says how a run
proceeds; the functions here turn it into what the run loop (`fc_jax.runs.loop`) feeds the engine, as
pure functions of (schedule, seed, epoch), so a resumed run draws exactly what an uninterrupted one
would: `epoch_indices` (epoch e's minibatches, `fold_in(fold_in(key(seed), 1), e)`, shared or per
lane), `train_subsample` (the rows train accuracy is measured on, `default_rng([seed, e])`, as the
course measures it), `epoch_learning_rate` (the course's `lr *= lr_decay` per epoch),
`rung_budgets` (successive halving's epoch budgets), and the schedule's structure for the engine:
`lr_schedule_of` (the kind; its numbers are `HParams` values), `augment_of` (crops, flips, mixup),
`epoch_keys` (epoch e's per-step augmentation keys, `fold_in(fold_in(key(seed), 2), e)`, shared or
per lane like the minibatches), `lane_learning_rates` (each lane's rate at an epoch's start).
`pbt` makes it population-based training (`fc_jax.runs.pbt`). With `seeds` = N > 1, the lanes come
in blocks of N consecutive lanes, one block per configuration (`lane_groups`); halving promotes
whole blocks, ranked by `group_means`.
`check_schedule`, `check_augment` and `check_lr_values` validate one before anything compiles.
`schedule_record` / `schedule_from_record` turn one into the JSON-ready record a checkpoint stores
(`halving` and `pbt` nested as dicts) and back, equal field for field.
"""

import math
from typing import NamedTuple

import jax
import numpy as np

from fc_jax import train
from fc_jax.augment import Augment
from fc_jax.hparams import check_integer
from fc_jax.lr_schedules import LR_SCHEDULES, LRSchedule, learning_rate_at
from fc_jax.runs.space import check_seed

__all__ = [
    "Halving",
    "Pbt",
    "Schedule",
    "schedule_record",
    "schedule_from_record",
    "check_pbt",
    "check_population",
    "check_schedule",
    "epoch_indices",
    "train_subsample",
    "epoch_learning_rate",
    "rung_budgets",
    "chunks_of",
    "checkpoint_due",
    "CHECKPOINT_COST_RATIO",
    "lane_groups",
    "lane_scores",
    "group_means",
    "lr_schedule_of",
    "augment_of",
    "check_augment",
    "check_lr_values",
    "lane_learning_rates",
    "epoch_keys",
]

CHECKPOINT_COST_RATIO = 10  # a write waits at least this many times the last write's duration


class Halving(NamedTuple):
    """Successive halving: rung budgets min_epochs, min_epochs * eta, ... up to num_epochs."""

    eta: int = 3  # keep the best 1/eta at each rung
    min_epochs: int = 1  # the first rung's budget


class Pbt(NamedTuple):
    """Population-based training (`fc_jax.runs.pbt`): every `ready` epochs the worst `quantile` of
    the lanes by validation accuracy copy the state of a lane from the best `quantile` and perturb
    the hyperparameters `names` (x0.8 or x1.2, clipped to their valid ranges)."""

    ready: int = 2  # epochs between exploit steps
    quantile: float = 0.25  # the fraction of lanes replaced (and the fraction copied from)
    names: tuple = ("learning_rate",)  # the hyperparameters perturbed


class Schedule(NamedTuple):
    """What every lane of a run shares (`fit`'s and `run_sweep`'s `schedule=`); its defaults are
    the only ones."""

    num_epochs: int = 10
    batch_size: int = 100
    seed: int = 0  # of the shared minibatches and of the train-accuracy subsample
    replace: bool = True  # minibatches with replacement (the course) or per-epoch permutations
    independent_batches: bool = False  # each lane draws its minibatches from its own seed
    chunks_per_epoch: int = 1  # compiled calls per epoch (a progress bar's resolution)
    num_train_samples: int | None = 1000  # train-accuracy subsample (None: all)
    halving: Halving | None = None  # None: every lane trains num_epochs
    seeds: int = 1  # lanes per configuration: consecutive lanes, seeds seed_c, seed_c + 1, ...
    pbt: Pbt | None = None  # population-based training (every lane trains num_epochs)
    # on_epoch_end (a checkpoint) after every epoch (0), or when `checkpoint_due` says so
    checkpoint_every: float = 0.0
    lr_schedule: str = "step"  # fc_jax.lr_schedules.LR_SCHEDULES; its numbers are HParams values
    crop_pad: int = 0  # random crops of each image zero-padded by this many pixels; 0 = none
    flip: bool = False  # random horizontal flips
    image_shape: tuple[int, ...] | None = None  # (C, H, W) of a row (crops, flips); None: X's


def schedule_record(s: Schedule) -> dict:
    """`s` as a JSON-ready dict (`halving` and `pbt` nested as dicts, tuples as lists)."""
    out = s._asdict()
    for name in ("halving", "pbt"):
        if out[name] is not None:
            out[name] = out[name]._asdict()
    if out["pbt"] is not None:
        out["pbt"]["names"] = list(out["pbt"]["names"])
    if out["image_shape"] is not None:
        out["image_shape"] = [int(d) for d in out["image_shape"]]
    return out


def schedule_from_record(record: dict) -> Schedule:
    """The `Schedule` of a `schedule_record` (ValueError naming an entry it does not know)."""
    unknown = sorted(set(record) - set(Schedule._fields))
    if unknown:
        raise ValueError(f"a schedule record has unknown entries {unknown}")
    r = dict(record)
    if r.get("halving") is not None:
        r["halving"] = Halving(**r["halving"])
    if r.get("pbt") is not None:
        r["pbt"] = Pbt(**{**r["pbt"], "names": tuple(r["pbt"].get("names", Pbt().names))})
    if r.get("image_shape") is not None:
        r["image_shape"] = tuple(r["image_shape"])
    return Schedule(**r)


def lr_schedule_of(s: Schedule, steps: int) -> LRSchedule:
    """The engine's `LRSchedule` of a run with `steps` steps per epoch."""
    return LRSchedule(s.lr_schedule, steps, s.num_epochs)


def augment_of(s: Schedule, hparams, image_shape) -> Augment:
    """The engine's `Augment`: the schedule's crops and flips, mixup when some lane's alpha > 0."""
    mixup = bool(np.any(np.asarray(hparams.mixup_alpha) > 0))
    return Augment(image_shape, int(s.crop_pad), bool(s.flip), mixup)


def check_augment(s: Schedule, input_dim: int, x_shape: tuple) -> tuple[int, ...] | None:
    """The (C, H, W) crops and flips work on, or ValueError when they have no images to work on.

    The shape is `s.image_shape`, else that of the training inputs when they are (N, C, H, W).
    """
    check_integer("crop_pad", s.crop_pad, 0)
    if not isinstance(s.flip, bool):
        raise ValueError(f"flip must be True or False, got {s.flip!r}")
    shape = s.image_shape or (tuple(x_shape[1:]) if len(x_shape) == 4 else None)
    if shape is not None and (len(shape) != 3 or int(np.prod(shape)) != input_dim):
        raise ValueError(f"image_shape {tuple(shape)} is not (C, H, W) with {input_dim} values")
    if (s.crop_pad or s.flip) and shape is None:
        what = f"crop_pad {s.crop_pad}" if s.crop_pad else "flip"
        raise ValueError(
            f"{what} needs images: the inputs have no (C, H, W) shape (a "
            "non-image dataset); give image_shape or drop the augmentation"
        )
    if shape is not None and s.crop_pad > min(shape[1:]):
        raise ValueError(f"crop_pad {s.crop_pad} is larger than the image ({shape[1]}x{shape[2]})")
    return None if shape is None else tuple(int(d) for d in shape)


def check_lr_values(s: Schedule, hparams) -> None:
    """ValueError when the schedule's values do not fit the run (before anything compiles)."""
    if s.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {s.lr_schedule!r}")
    warmup = np.asarray(hparams.warmup_epochs, np.float64)
    if s.lr_schedule == "step" and np.any(warmup > 0):
        raise ValueError(
            "warmup_epochs needs lr_schedule cosine, linear or triangle (step "
            "decays per epoch from the first step)"
        )
    if np.any(warmup > s.num_epochs):
        raise ValueError(
            f"warmup_epochs {float(warmup.max()):g} is longer than the run ({s.num_epochs} epochs)"
        )


def lane_learning_rates(s: Schedule, hparams, e: int, steps: int) -> np.ndarray:
    """(K,) each lane's learning rate at the first step of epoch `e` (the engine's `step` input,
    and the value recorded in the history)."""
    lr0 = np.asarray(hparams.learning_rate)
    if s.lr_schedule == "step":
        decay = np.asarray(hparams.lr_decay)
        return np.asarray([epoch_learning_rate(a, d, e) for a, d in zip(lr0, decay)], lr0.dtype)
    hp = jax.tree.map(np.asarray, hparams)
    return np.asarray(learning_rate_at(lr_schedule_of(s, steps), hp, np.int32(e * steps)))


def epoch_keys(schedule: Schedule, seeds, e: int, steps: int) -> np.ndarray:
    """Epoch `e`'s augmentation keys as raw key data: (steps, 2) shared, or (W, steps, 2) per lane
    seed, from `fold_in(fold_in(key(seed), 2), e)` (the minibatches' seed, another stream)."""

    def draw(seed):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(int(seed)), 2), e)
        return np.asarray(jax.random.key_data(jax.random.split(key, steps)))

    if schedule.independent_batches:
        return np.stack([draw(s) for s in seeds])
    return draw(schedule.seed)


def epoch_learning_rate(lr0: float, lr_decay: float, epoch: int) -> float:
    """The course's decayed learning rate after `epoch` epochs: `lr *= lr_decay`, repeated (float64)."""
    lr = float(lr0)
    for _ in range(epoch):
        lr *= float(lr_decay)
    return lr


def rung_budgets(num_epochs: int, halving: Halving | None) -> list[int]:
    """The epoch budgets of the rungs: [num_epochs] without halving, else min_epochs * eta**i."""
    if halving is None:
        return [num_epochs]
    out, b = [], halving.min_epochs
    while b < num_epochs:
        out.append(b)
        b *= halving.eta
    return [*out, num_epochs]


def check_schedule(s: Schedule, num_train: int) -> None:
    """ValueError naming the first bad schedule entry (before anything compiles)."""

    check_integer("num_epochs", s.num_epochs, 1)
    check_integer("batch_size", s.batch_size, 1)
    check_integer("chunks_per_epoch", s.chunks_per_epoch, 1)
    check_seed(s.seed)
    if s.num_train_samples is not None:
        check_integer("num_train_samples", s.num_train_samples, 1)
    if s.batch_size > num_train:
        raise ValueError(
            f"batch_size {s.batch_size} is larger than the training set ({num_train} examples)"
        )
    check_checkpoint_every(s.checkpoint_every)
    if s.halving is not None:
        check_integer("eta", s.halving.eta, 2)
        check_integer("min_epochs", s.halving.min_epochs, 1)
    check_integer("seeds", s.seeds, 1)
    if s.pbt is not None:
        check_pbt(s.pbt)
        if s.halving is not None or s.seeds > 1:
            raise ValueError("population-based training runs alone: no halving, one seed each")


def check_pbt(p: Pbt) -> None:
    """ValueError naming the first bad PBT setting."""
    from fc_jax.hparams import HPARAMS

    check_integer("ready", p.ready, 1)
    if isinstance(p.quantile, bool) or not 0 < p.quantile <= 0.5:
        raise ValueError(
            f"quantile must be in (0, 0.5] (the worst and best fractions), got {p.quantile!r}"
        )
    bad = [n for n in p.names if n not in HPARAMS]
    if bad or not p.names:
        raise ValueError(f"PBT perturbs hyperparameters; got {list(p.names)}")


def check_population(quantile: float, count: int, what: str = "lanes", prefix: str = "") -> None:
    """ValueError unless `count` lanes give population-based training at least one lane to replace
    (floor(count * quantile) >= 1); `what` and `prefix` word the message for the caller."""
    if int(count * quantile) < 1:
        raise ValueError(
            f"{prefix}population-based training with quantile {quantile:g} needs at least "
            f"{math.ceil(1 / quantile)} {what}; got {count}"
        )


def check_checkpoint_every(seconds) -> None:
    """ValueError unless `seconds` is a finite number >= 0."""
    ok = isinstance(seconds, (int, float, np.integer, np.floating)) and not isinstance(
        seconds, bool
    )
    if not ok or not np.isfinite(seconds) or seconds < 0:
        raise ValueError(f"checkpoint_every must be a number of seconds >= 0, got {seconds!r}")


def checkpoint_due(every: float, since_last: float, last_write: float) -> bool:
    """Whether to write a checkpoint at this epoch's end (the last epoch and Ctrl-C always write).

    `every` 0 writes after every epoch. Otherwise a write is due once `since_last` (seconds since
    the last write ended, or since the run started) reaches max(every, CHECKPOINT_COST_RATIO x the
    last write's duration): writes then take at most about 1 / (1 + CHECKPOINT_COST_RATIO), 9%, of
    the wall time, whatever a checkpoint's size.
    """
    return every == 0 or since_last >= max(every, CHECKPOINT_COST_RATIO * last_write)


def chunks_of(steps: int, requested: int) -> int:
    """The largest divisor of `steps` not above `requested`, so every chunk has one shape."""
    return max(d for d in range(1, min(steps, max(requested, 1)) + 1) if steps % d == 0)


def train_subsample(schedule: Schedule, e: int, n: int):
    """The rows of epoch `e`'s train-accuracy subsample (all rows when it is not smaller)."""
    k = schedule.num_train_samples
    if not k or k >= n:
        return slice(None)
    return np.random.default_rng([schedule.seed, e]).choice(n, k, replace=False)


def epoch_indices(schedule: Schedule, seeds, e: int, n: int, steps: int) -> np.ndarray:
    """Epoch `e`'s minibatch indices: (steps, batch) shared, or (W, steps, batch) per lane seed."""

    def draw(seed):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(int(seed)), 1), e)
        return np.asarray(
            train.sample_indices(key, n, steps, schedule.batch_size, schedule.replace)
        )

    if schedule.independent_batches:
        return np.stack([draw(s) for s in seeds])
    return draw(schedule.seed)


def lane_groups(num_lanes: int, seeds: int = 1) -> np.ndarray:
    """(K,) configuration index of each lane: blocks of `seeds` consecutive lanes."""
    check_integer("seeds", seeds, 1)
    if num_lanes % seeds:
        raise ValueError(f"{num_lanes} lanes are not whole blocks of {seeds} seeds")
    return np.arange(num_lanes) // seeds


def lane_scores(best_val_acc) -> np.ndarray:
    """Each lane's best validation accuracy as a score: 0 for a lane with none (-1: it diverged in
    its first epoch); a lane that diverged later keeps its best before that."""
    best = np.asarray(best_val_acc, np.float64)
    return np.where(best >= 0, best, 0.0)


def group_means(values, groups) -> np.ndarray:
    """(G,) the mean of `values` over the lanes of each group (`groups`: (K,) indices 0..G-1)."""
    groups = np.asarray(groups)
    total = np.bincount(groups, weights=np.asarray(values, np.float64))
    return total / np.bincount(groups)
