"""LR schedules named in llm-foundry YAMLs, with Composer's formulas: a schedule maps run progress to a multiplier
(lr_t = initial_lr * multiplier, applied with `apply_lr`).

When it is evaluated (the warmup off-by-one). As in Composer, the trainer evaluates the schedule at the *start* of
each batch, before the forward pass, with the timestamp of completed work: optimizer step k (k = 1, 2, ...) uses
the multiplier at t = k - 1 batches. So during a linear warmup of W batches the first step runs at multiplier 0 (it
only advances the optimizer's moments), step k at (k-1)/W, and the full lr is first used by step W+1. We keep this
instead of the "t = k" convention to reproduce Composer runs step for step; with t in tokens or samples, t is the
global count consumed before the batch.

Times are Composer time strings (`Time.parse`). As in Composer: a 'dur' fraction becomes int(fraction *
max_duration) in max_duration's unit; epochs become batches (times batches_per_epoch; needed for any time in 'ep',
including 'dur' when max_duration is in epochs), because a whole-epoch clock would move the lr once per epoch;
`t_warmup` and `t_max` must end up in one unit; `t_max` may not end before max_duration. `scale_warmup` is accepted
for compatibility and has no effect: it matters only with Composer's scale_schedule_ratio, which llm-foundry YAMLs
do not set.

Formulas (t: the timestamp in t_warmup's unit; tau = min(1, (t - t_warmup) / (t_max - t_warmup)), 0 when
t_max <= t_warmup; every schedule returns peak * t / t_warmup while t < t_warmup, where peak is the first value
after warmup):
  constant_with_warmup      alpha
  linear_decay_with_warmup  alpha_i + (alpha_f - alpha_i) * tau
  cosine_with_warmup        alpha_f + (1 - alpha_f) * (1 + cos(pi * tau)) / 2
  warmup_stable_decay       alpha_i until t_max - t_cooldown, then linear to alpha_f over t_cooldown
  inv_sqrt_with_warmup      (llm-foundry) before c = max(t_warmup, t_max - t_cooldown):
                            alpha_f_decay + (1 - alpha_f_decay) / sqrt((t - t_warmup + t_scale) / t_scale);
                            from c, linear from that value at c to alpha_f_cooldown over t_cooldown. t_warmup,
                            t_scale and t_cooldown may not be 'dur' and must be in max_duration's unit.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from torch.optim import Optimizer

from llmfoundry.config.time import Time, Timestamp, TimeUnit
from llmfoundry.config.validation import check_keys
from llmfoundry.registry import schedulers

__all__ = ['Scheduler', 'apply_lr', 'build_scheduler']

_ONE_DUR = Time(1.0, TimeUnit.DURATION)


class Scheduler(Protocol):
    def __call__(self, timestamp: Timestamp, max_duration: Time, batches_per_epoch: int | None = None) -> float:
        """The lr multiplier at `timestamp` (completed work before the batch about to run)."""
        ...


def apply_lr(optimizer: Optimizer, multiplier: float) -> None:
    """Set every group's lr to its initial_lr * multiplier (the groups' ratios, e.g. from param_groups, are kept)."""
    for group in optimizer.param_groups:
        group['lr'] = group['initial_lr'] * multiplier


@dataclass(frozen=True)
class _Clock:
    """Times of one evaluation, converted as Composer's schedulers convert them (module docstring)."""

    timestamp: Timestamp
    max_duration: Time
    batches_per_epoch: int | None

    def convert(self, time: Time, name: str) -> Time:
        """`time` as a whole number of batches, samples or tokens (Composer's arithmetic, truncation included)."""
        if time.unit is TimeUnit.DURATION:
            if self.max_duration.unit is TimeUnit.DURATION:
                raise ValueError("max_duration cannot itself be in 'dur'.")
            if self.max_duration.unit is TimeUnit.EPOCH:
                return Time(int(time.value * self._batches_per_epoch(name, time) * self.max_duration.value),
                            TimeUnit.BATCH)
            return Time(int(time.value * self.max_duration.value), self.max_duration.unit)
        if time.unit is TimeUnit.EPOCH:
            return Time(time.value * self._batches_per_epoch(name, time), TimeUnit.BATCH)
        return time

    def _batches_per_epoch(self, name: str, time: Time) -> int:
        if self.batches_per_epoch is None:
            raise ValueError(f'{name}={time} (max_duration={self.max_duration}) needs epochs converted to batches; '
                             'call the scheduler with batches_per_epoch.')
        return self.batches_per_epoch

    def fields(self, scheduler: object, *names: str) -> list[Time]:
        """The named Time fields of `scheduler`, converted."""
        return [self.convert(getattr(scheduler, name), f'scheduler.{name}') for name in names]

    def now(self, unit: TimeUnit) -> int:
        return self.timestamp.get(unit)


def _same_unit(a: Time, b: Time, names: str) -> None:
    if a.unit is not b.unit:
        raise ValueError(f'scheduler {names} must be in one unit after conversion, got {a} and {b}.')


def _fraction(t: int, start: Time, end: Time) -> float:
    """How far t is from start to end, clamped to 1; 0 when the span is empty."""
    if end.value <= start.value:
        return 0.0
    return min(1.0, (t - start.value) / (end.value - start.value))


@dataclass(frozen=True)
class _WithWarmup:
    """What every schedule does on each evaluation (the template `__call__`): convert its Time fields named in
    `TIMES`, `check` them, rise linearly from 0 to `peak` while t < t_warmup, then return `after_warmup`."""

    TIMES: ClassVar[tuple[str, ...]] = ('t_warmup', 't_max')

    def __call__(self, timestamp: Timestamp, max_duration: Time, batches_per_epoch: int | None = None) -> float:
        clock = _Clock(timestamp, max_duration, batches_per_epoch)
        times = dict(zip(self.TIMES, clock.fields(self, *self.TIMES)))
        self.check(clock, **times)
        t_warmup = times['t_warmup']
        t = clock.now(t_warmup.unit)
        if t < t_warmup.value:
            return self.peak * t / t_warmup.value
        return self.after_warmup(t, **times)

    @property
    def peak(self) -> float:
        """The multiplier warmup rises to: the schedule's first value after warmup."""
        return 1.0

    def check(self, clock: _Clock, t_warmup: Time, t_max: Time, **times: Time) -> None:
        """Composer's checks: t_warmup and t_max in one unit, t_max not ending before max_duration."""
        _same_unit(t_warmup, t_max, 't_warmup and t_max')
        run = clock.convert(_ONE_DUR, 'max_duration')
        if t_max.unit is run.unit and t_max.value < run.value:
            raise ValueError(f'scheduler.t_max ({t_max}) must not be shorter than max_duration ({run}).')

    def after_warmup(self, t: int, **times: Time) -> float:
        """The multiplier at t (in t_warmup's unit, t >= t_warmup), given the converted `TIMES`."""
        raise NotImplementedError


@dataclass(frozen=True)
class LinearWithWarmup(_WithWarmup):
    """linear_decay_with_warmup: warmup to alpha_i, then linear from alpha_i to alpha_f by t_max."""

    t_warmup: Time
    alpha_i: float = 1.0
    alpha_f: float = 0.0
    t_max: Time = _ONE_DUR
    scale_warmup: bool = False

    @property
    def peak(self) -> float:
        return self.alpha_i

    def after_warmup(self, t: int, t_warmup: Time, t_max: Time) -> float:
        return self.alpha_i + (self.alpha_f - self.alpha_i) * _fraction(t, t_warmup, t_max)


@dataclass(frozen=True)
class ConstantWithWarmup(_WithWarmup):
    """constant_with_warmup: warmup to alpha, then alpha (Composer builds it as linear from alpha to alpha, which is
    alpha at every step)."""

    t_warmup: Time
    alpha: float = 1.0
    t_max: Time = _ONE_DUR
    scale_warmup: bool = False

    @property
    def peak(self) -> float:
        return self.alpha

    def after_warmup(self, t: int, t_warmup: Time, t_max: Time) -> float:
        return self.alpha


@dataclass(frozen=True)
class CosineWithWarmup(_WithWarmup):
    """cosine_with_warmup: warmup to 1, then half a cosine from 1 to alpha_f by t_max."""

    t_warmup: Time
    t_max: Time = _ONE_DUR
    alpha_f: float = 0.0
    scale_warmup: bool = False

    def after_warmup(self, t: int, t_warmup: Time, t_max: Time) -> float:
        tau = _fraction(t, t_warmup, t_max)
        return self.alpha_f + (1 - self.alpha_f) * (1 + math.cos(math.pi * tau)) / 2


@dataclass(frozen=True)
class WarmupStableDecay(_WithWarmup):
    """warmup_stable_decay: warmup to alpha_i, hold it, then linear to alpha_f over the last t_cooldown."""

    TIMES: ClassVar[tuple[str, ...]] = ('t_warmup', 't_max', 't_cooldown')

    t_warmup: Time
    t_cooldown: Time
    t_max: Time = _ONE_DUR
    alpha_i: float = 1.0
    alpha_f: float = 0.0
    scale_warmup: bool = False

    @property
    def peak(self) -> float:
        return self.alpha_i

    def check(self, clock: _Clock, t_warmup: Time, t_max: Time, t_cooldown: Time) -> None:
        _same_unit(t_cooldown, t_max, 't_cooldown and t_max')
        if t_warmup.value + t_cooldown.value > t_max.value:
            raise ValueError(f'scheduler t_warmup + t_cooldown ({t_warmup} + {t_cooldown}) exceeds t_max ({t_max}).')
        super().check(clock, t_warmup, t_max)

    def after_warmup(self, t: int, t_warmup: Time, t_max: Time, t_cooldown: Time) -> float:
        cooldown_start = t_max.value - t_cooldown.value
        if t < cooldown_start:
            return self.alpha_i
        tau = min(1.0, (t - cooldown_start) / t_cooldown.value)
        return self.alpha_i + (self.alpha_f - self.alpha_i) * tau


@dataclass(frozen=True)
class InverseSquareRootWithWarmup(_WithWarmup):
    """inv_sqrt_with_warmup (llm-foundry): warmup to 1, inverse-sqrt decay towards alpha_f_decay, linear cooldown."""

    TIMES: ClassVar[tuple[str, ...]] = ('t_warmup', 't_scale', 't_cooldown', 't_max')

    t_warmup: Time
    t_scale: Time
    t_cooldown: Time
    t_max: Time = _ONE_DUR
    alpha_f_decay: float = 0.0
    alpha_f_cooldown: float = 0.0

    def __post_init__(self) -> None:
        if self.alpha_f_decay < self.alpha_f_cooldown:
            raise ValueError(f'scheduler: alpha_f_decay ({self.alpha_f_decay}) must be >= alpha_f_cooldown '
                             f'({self.alpha_f_cooldown}), so that the lr never rises after warmup.')
        for name in ('t_warmup', 't_scale', 't_cooldown'):
            if getattr(self, name).unit is TimeUnit.DURATION:
                raise ValueError(f"scheduler.{name} cannot be in 'dur': this schedule is for continued training, "
                                 'where max_duration changes; use max_duration\'s unit.')

    def check(self, clock: _Clock, **times: Time) -> None:
        """llm-foundry's check instead of Composer's: the times are in max_duration's unit."""
        for name in ('t_warmup', 't_scale', 't_cooldown'):
            if getattr(self, name).unit is not clock.max_duration.unit:
                raise ValueError(f'scheduler.{name}={getattr(self, name)} must be in the unit of max_duration '
                                 f'({clock.max_duration}).')

    def after_warmup(self, t: int, t_warmup: Time, t_scale: Time, t_cooldown: Time, t_max: Time) -> float:
        cooldown_start = max(t_warmup.value, t_max.value - t_cooldown.value)

        def decayed(at: int) -> float:
            return self.alpha_f_decay + (1 - self.alpha_f_decay) / math.sqrt((at - t_warmup.value + t_scale.value)
                                                                             / t_scale.value)

        if t < cooldown_start:
            return decayed(t)
        start = decayed(cooldown_start)
        if t_cooldown.value == 0:
            return start
        tau = min(1.0, (t - cooldown_start) / t_cooldown.value)
        return start + (self.alpha_f_cooldown - start) * tau


def _field_value(field: dataclasses.Field, value: Any, path: str) -> Any:
    """A YAML value for a scheduler field: times parsed as Composer time strings, numbers and flags type-checked."""
    if field.type == 'Time':
        return Time.parse(value, path)
    kind = bool if field.type == 'bool' else (int, float)
    if isinstance(value, bool) is not (kind is bool) or not isinstance(value, kind):
        raise ValueError(f'{path}={value!r} must be {"true or false" if kind is bool else "a number"}.')
    return value


def build_scheduler(cfg: Mapping[str, Any]) -> Scheduler:
    """The schedule a YAML `scheduler:` section describes. Entries of the `schedulers` registry are dataclasses
    whose fields are the YAML keys (fields typed `Time` take time strings); fields without a default are required."""
    name, cls = schedulers.get_named(cfg, 'scheduler')
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(cfg, ['name', *fields], 'scheduler')
    missing = [k for k, f in fields.items() if k not in cfg and f.default is dataclasses.MISSING]
    if missing:
        raise ValueError(f"scheduler {name!r} requires {', '.join(f'scheduler.{k}' for k in missing)}.")
    return cls(**{k: _field_value(fields[k], v, f'scheduler.{k}') for k, v in cfg.items() if k != 'name'})
