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


def check_keys(section: Any, allowed: Any, path: str, hint: str = '') -> None:
    """Every key of mapping `section` must be in `allowed`; `path` names the section ('' at the top level)."""
    allowed = sorted(allowed)
    for key in section:
        if key not in allowed:
            raise unknown_key_error(str(key), allowed, path, hint)


MAX_LISTED_KEYS = 12  # a section with more accepted keys shows only the close matches, not the whole list
MAX_SUGGESTIONS = 3
SUGGESTION_SPREAD = 0.1  # further suggestions must be about as close as the best one
REFERENCE_HINT = ' Every key is listed in docs/CONFIG_REFERENCE.md.'


def close_matches(key: str, allowed: list[str]) -> list[str]:
    """Up to MAX_SUGGESTIONS of `allowed` that look like a misspelling of `key`, best first."""
    scored = sorted(((difflib.SequenceMatcher(None, key, name).ratio(), name) for name in allowed),
                    key=lambda item: (-item[0], item[1]))
    best = scored[0][0] if scored else 0.0
    return [name for ratio, name in scored[:MAX_SUGGESTIONS] if ratio >= max(0.6, best - SUGGESTION_SPREAD)]


def did_you_mean(quoted: list[str]) -> str:
    """"; did you mean 'a'?" or "; did you mean 'a', 'b' or 'c'?" for already-quoted names; '' for none."""
    if not quoted:
        return ''
    if len(quoted) == 1:
        return f'; did you mean {quoted[0]}?'
    return f"; did you mean {', '.join(quoted[:-1])} or {quoted[-1]}?"


def unknown_key_error(key: str, allowed: list[str], path: str, hint: str = '') -> ConfigError:
    """`unknown key 'a.b'; did you mean 'a.c'?`; the accepted keys are listed only when there are few, and `hint`
    only follows a key that resembles none."""
    def full(name: str) -> str:
        return f"'{path}.{name}'" if path else f"'{name}'"

    close = [full(name) for name in close_matches(key, allowed)]
    suggestion = did_you_mean(close)
    if len(allowed) <= MAX_LISTED_KEYS:
        listing = f" (accepted: {', '.join(allowed)})."
    elif close:
        listing = ''
    else:
        listing = '.' + (REFERENCE_HINT if path in ('', 'fsdp_config') else '')
    return ConfigError(f"unknown key {full(key)}{suggestion}{listing}{'' if close else hint}")


def from_dict(cls: type[T], data: dict[str, Any] | None, path: str = '', hint_unknown: str = '') -> T:
    """Build dataclass `cls` from `data`: unknown keys, missing required keys and wrong types raise ConfigError.

    `path` names the section in messages ('' at the top level).
    """
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"'{path or 'config'}' must be a mapping, got {type(data).__name__}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    check_keys(data, fields, path, hint_unknown)
    values = {}
    for name, field in fields.items():
        key = f'{path}.{name}' if path else name
        if name in data:
            values[name] = _coerce(data[name], hints[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"Missing required config key '{key}'.")
    return cls(**values)


def _coerce(value: Any, annotation: Any, path: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        nested = [o for o in options if dataclasses.is_dataclass(o)]
        if nested and isinstance(value, dict):  # report the nested key's own error, not a type mismatch
            return from_dict(nested[0], value, path)
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, path)
            except ConfigError:
                continue
        raise ConfigError(f"'{path}'={value!r} has the wrong type; expected {_describe(annotation)}.")
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, path)
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
