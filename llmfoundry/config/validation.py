"""Turn plain dicts into typed dataclasses, with errors that name the key path and the fix.

Only the shapes a YAML can hold are supported: bool, int, float, str, dict, list, None, nested
dataclasses, and Optional/Union of those. An int is accepted where a float is expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, TypeVar

T = TypeVar('T')


class ConfigError(ValueError):
    """A configuration problem; the message says which key and what to change."""


def unknown_key_error(key: str, valid: list[str], path: str, hint: str = '') -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    suggestion = f" Did you mean '{path}{close[0]}'?" if close else ''
    return ConfigError(f"Unknown config key '{path}{key}'.{suggestion}{hint}")


def from_dict(cls: type[T], data: dict[str, Any] | None, path: str = '', hint_unknown: str = '') -> T:
    """Build dataclass `cls` from `data`: unknown keys, missing required keys and wrong types raise ConfigError."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"'{path.rstrip('.') or 'config'}' must be a mapping, got {type(data).__name__}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise unknown_key_error(key, sorted(fields), path, hint_unknown)
    values = {}
    for name, field in fields.items():
        if name in data:
            values[name] = _coerce(data[name], hints[name], f'{path}{name}')
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"Missing required config key '{path}{name}'.")
    return cls(**values)


def _coerce(value: Any, annotation: Any, path: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        nested = [o for o in options if dataclasses.is_dataclass(o)]
        if nested and isinstance(value, dict):  # report the nested key's own error, not a type mismatch
            return from_dict(nested[0], value, f'{path}.')
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, path)
            except ConfigError:
                continue
        raise ConfigError(f"'{path}'={value!r} has the wrong type; expected {_describe(annotation)}.")
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, f'{path}.')
    if annotation is Any:
        return value
    if origin in (dict, list):
        if not isinstance(value, origin):
            raise ConfigError(f"'{path}'={value!r} has the wrong type; expected {_describe(annotation)}.")
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float) and isinstance(value, bool):
        raise ConfigError(f"'{path}'={value!r} has the wrong type; expected {_describe(annotation)}.")
    if annotation in (bool, int, float, str, dict, list) and not isinstance(value, annotation):
        raise ConfigError(f"'{path}'={value!r} has the wrong type; expected {_describe(annotation)}.")
    return value


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return ' or '.join(_describe(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return 'null'
    if origin is not None:
        return {dict: 'a mapping', list: 'a list'}.get(origin, str(annotation))
    return {bool: 'true/false', int: 'an integer', float: 'a number', str: 'a string', dict: 'a mapping',
            list: 'a list'}.get(annotation, getattr(annotation, '__name__', str(annotation)))
