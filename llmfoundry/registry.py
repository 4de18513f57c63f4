"""Small named registries: one way to build a thing from YAML (a name plus keyword arguments).

Other packages add entries through entry points in the group `llmfoundry.<registry name>`, e.g. in
their pyproject: [project.entry-points."llmfoundry.callbacks"] my_callback = "my_pkg.callbacks:MyCallback".
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from llmfoundry.config.validation import ConfigError, check_keys

T = TypeVar('T')


class Registry(Generic[T]):
    def __init__(self, name: str) -> None:
        self.name = name
        self._entries: dict[str, Callable[..., T]] = {}
        self._plugins_loaded = False

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def add(builder: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.name} registry: '{name}' is already registered.")
            self._entries[name] = builder
            return builder

        return add

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def get(self, name: str, path: str) -> Callable[..., T]:
        self._load_plugins()
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ''
            raise ConfigError(f"{path}: unknown {self.name} '{name}'.{hint} Registered: {', '.join(self.names())}.")
        return self._entries[name]

    def build(self, name: str, kwargs: dict[str, Any] | None, path: str, **extra: Any) -> T:
        """Call the registered builder with the YAML kwargs (checked against its signature) and `extra`."""
        builder = self.get(name, path)
        kwargs = dict(kwargs or {})
        check_kwargs(builder, kwargs, path, exclude=set(extra))
        return builder(**extra, **kwargs)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for entry in entry_points(group=f'llmfoundry.{self.name}'):
            if entry.name not in self._entries:
                self._entries[entry.name] = entry.load()


def check_kwargs(
    builder: Callable[..., Any], kwargs: dict[str, Any], path: str, exclude: set[str] = frozenset()
) -> None:
    """Unknown keyword arguments are config errors naming the key and the valid ones."""
    parameters = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    valid = [n for n, p in parameters.items() if n not in exclude and n != 'self'
             and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    check_keys(kwargs, valid, path)
