"""Composer's time strings: '1ep', '100ba', '2048sp', '10000tok', '0.5dur'.

Units: ep (epochs), ba (batches = optimizer steps), sp (samples, global across ranks), tok (tokens,
global across ranks, non-padding only), dur (a fraction of max_duration). ep/ba/sp/tok take
non-negative integers, dur a non-negative number. A bare integer means epochs (Composer's rule for
max_duration, eval_interval and save_interval).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import Enum

from .validation import ConfigError


class TimeUnit(str, Enum):
    EPOCH = 'ep'
    BATCH = 'ba'
    SAMPLE = 'sp'
    TOKEN = 'tok'
    DURATION = 'dur'


_PATTERN = re.compile(r'^\s*(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)\s*(ep|ba|sp|tok|dur)\s*$')
_EXAMPLES = "'1ep', '100ba', '2048sp', '10000tok' or '0.5dur'"


@dataclass(frozen=True)
class Time:
    value: int | float
    unit: TimeUnit

    @classmethod
    def parse(cls, value: str | int | Time, path: str = 'time') -> Time:
        """Parse a time string (or a bare integer, meaning epochs); `path` names the config key in errors."""
        if isinstance(value, Time):
            return value
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ConfigError(f'{path}={value!r} is not a time: use an integer number of epochs or {_EXAMPLES}.')
        if isinstance(value, int):
            if value < 0:
                raise ConfigError(f'{path}={value} must not be negative.')
            return cls(value, TimeUnit.EPOCH)
        match = _PATTERN.match(value)
        if not match:
            raise ConfigError(f'{path}={value!r} is not a time string; write a number and a unit, e.g. {_EXAMPLES}.')
        number, unit = float(match.group(1)), TimeUnit(match.group(2))
        if unit is TimeUnit.DURATION:
            return cls(number, unit)
        if not number.is_integer():
            raise ConfigError(
                f"{path}={value!r}: '{unit.value}' counts whole units; use an integer (or a 'dur' fraction)."
            )
        return cls(int(number), unit)

    def __str__(self) -> str:
        return f'{self.value}{self.unit.value}'


@dataclass(frozen=True)
class Timestamp:
    """Progress of a run: completed epochs, batches, samples and tokens (samples and tokens global across ranks)."""

    epoch: int = 0
    batch: int = 0
    sample: int = 0
    token: int = 0
    batch_in_epoch: int = 0

    def get(self, unit: TimeUnit) -> int:
        if unit is TimeUnit.DURATION:
            raise ConfigError("a Timestamp has no 'dur' count; convert with fraction_complete().")
        return {TimeUnit.EPOCH: self.epoch, TimeUnit.BATCH: self.batch, TimeUnit.SAMPLE: self.sample,
                TimeUnit.TOKEN: self.token}[unit]

    def after_batch(self, samples: int, tokens: int) -> Timestamp:
        return replace(self, batch=self.batch + 1, sample=self.sample + samples, token=self.token + tokens,
                       batch_in_epoch=self.batch_in_epoch + 1)

    def after_epoch(self) -> Timestamp:
        return replace(self, epoch=self.epoch + 1, batch_in_epoch=0)


def to_units_of(time: Time, max_duration: Time) -> Time:
    """`time` expressed in max_duration's unit when it is a 'dur' fraction; unchanged otherwise."""
    if time.unit is not TimeUnit.DURATION:
        return time
    if max_duration.unit is TimeUnit.DURATION:
        raise ConfigError("max_duration cannot itself be in 'dur'.")
    return Time(time.value * max_duration.value, max_duration.unit)


def elapsed(timestamp: Timestamp, time: Time, max_duration: Time) -> float:
    """How far `timestamp` is into a span of length `time`, as a fraction (1.0 when the span is over)."""
    span = to_units_of(time, max_duration)
    if span.value == 0:
        return 1.0
    return timestamp.get(span.unit) / span.value


def fraction_complete(timestamp: Timestamp, max_duration: Time) -> float:
    """The run's progress in [0, 1] ('dur' of the timestamp)."""
    return min(1.0, elapsed(timestamp, max_duration, max_duration))


def reached(timestamp: Timestamp, time: Time, max_duration: Time) -> bool:
    """True once `timestamp` has reached `time` (a point in the run)."""
    return elapsed(timestamp, time, max_duration) >= 1.0


def crossed(previous: Timestamp, current: Timestamp, interval: Time, max_duration: Time) -> bool:
    """True when moving from `previous` to `current` passed a multiple of `interval` (an event fires).

    Checked after every batch and at every epoch end; samples and tokens grow a whole batch at a time,
    so an interval in those units fires after the batch that crosses it. 'dur' converts to max_duration's unit.
    """
    interval = to_units_of(interval, max_duration)
    if interval.value <= 0:
        raise ConfigError(f'an interval must be positive, got {interval}.')
    return current.get(interval.unit) // interval.value > previous.get(interval.unit) // interval.value
