"""Wall-time helpers shared by the callbacks that report durations (speed_monitor, runtime_estimator).

Composer reports durations in a configurable unit (`time_unit`, default hours); both callbacks accept
the same names so a YAML written for Composer keeps its meaning.
"""

from __future__ import annotations

from llmfoundry.config.validation import ConfigError

_SECONDS_PER_UNIT = {'seconds': 1.0, 'minutes': 60.0, 'hours': 3600.0, 'days': 86400.0}


def seconds_per(time_unit: str, path: str) -> float:
    """Seconds in one `time_unit`; `path` names the config key in the error for an unknown unit."""
    if time_unit not in _SECONDS_PER_UNIT:
        raise ConfigError(f"{path}.time_unit={time_unit!r} is invalid; allowed: {', '.join(_SECONDS_PER_UNIT)}.")
    return _SECONDS_PER_UNIT[time_unit]
