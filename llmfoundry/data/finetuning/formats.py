"""Finetuning example formats (llm-foundry's) and how a `preprocessing_fn` setting becomes a function.

An example is either prompt/response, exactly two keys: `prompt` and `response` (or `completion`), both strings;
or chat, exactly one key: `messages`, a list of {role, content} with roles system/user/assistant/tool, no role
twice in a row, at least two messages, the last one from the assistant.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

from llmfoundry.config.validation import ConfigError
from llmfoundry.data.errors import DataError

log = logging.getLogger(__name__)

PROMPT_KEYS = ('prompt',)
RESPONSE_KEYS = ('response', 'completion')
MESSAGES_KEY = 'messages'
ROLES = ('system', 'user', 'assistant', 'tool')

ExampleType = Literal['prompt_response', 'chat']
Preprocessor = Callable[[dict[str, Any]], dict[str, Any]]


class FinetuningDataError(DataError, ValueError):
    """A finetuning example that cannot be used; the message names the source and the example index."""


def example_type(example: Any) -> ExampleType:
    """'chat' or 'prompt_response'; ValueError saying which keys are expected otherwise."""
    if not isinstance(example, Mapping):
        raise ValueError(f'an example must be a mapping, got {type(example).__name__}')
    keys = set(example)
    if keys == {MESSAGES_KEY}:
        return 'chat'
    if len(keys) == 2 and keys & set(PROMPT_KEYS) and keys & set(RESPONSE_KEYS):
        return 'prompt_response'
    raise ValueError(f'unknown example format with keys {sorted(keys)}: expected {{prompt, response}} '
                     f'(or {{prompt, completion}}) or {{messages}}; set preprocessing_fn to map other columns')


def prompt_response(example: Mapping[str, Any]) -> tuple[str, str]:
    """The (prompt, response) strings of a prompt/response example."""
    prompt = example['prompt']
    response = example['response'] if 'response' in example else example['completion']
    for name, value in (('prompt', prompt), ('response', response)):
        if not isinstance(value, str):
            raise ValueError(f'{name} must be a string, got {type(value).__name__}')
    return prompt, response


def chat_messages(example: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The validated `messages` of a chat example."""
    messages = example[MESSAGES_KEY]
    if not isinstance(messages, list):
        raise ValueError(f'messages must be a list, got {type(messages).__name__}')
    if len(messages) < 2:
        raise ValueError(f'a chat needs at least 2 messages, got {len(messages)}')
    previous = None
    for position, message in enumerate(messages):
        if not isinstance(message, Mapping) or set(message) != {'role', 'content'}:
            keys = sorted(message) if isinstance(message, Mapping) else type(message).__name__
            raise ValueError(f'message {position} must have exactly the keys role and content, got {keys}')
        role, content = message['role'], message['content']
        if role not in ROLES:
            raise ValueError(f'message {position} has role {role!r}; allowed: {", ".join(ROLES)}')
        if not isinstance(content, (str, list)):
            raise ValueError(f'message {position} content must be a string or list, got {type(content).__name__}')
        if role == previous:
            raise ValueError(f'messages {position - 1} and {position} both have role {role!r}')
        previous = role
    if messages[-1]['role'] != 'assistant':
        raise ValueError(f"a chat must end with an assistant message, the last one is {messages[-1]['role']!r}")
    return [dict(message) for message in messages]


def mapping_preprocessor(mapping: Mapping[str, Any], key: str) -> Preprocessor:
    """`{prompt: column, response: column}` -> a function renaming those columns."""
    if set(mapping) != {'prompt', 'response'}:
        raise ConfigError(f'{key} as a mapping must have exactly the keys prompt and response, got {sorted(mapping)}')
    prompt_column, response_column = str(mapping['prompt']), str(mapping['response'])

    def rename(example: dict[str, Any]) -> dict[str, Any]:
        missing = [c for c in (prompt_column, response_column) if c not in example]
        if missing:
            raise ValueError(f'{key} names column(s) {missing} that the example lacks; it has {sorted(example)}')
        return {'prompt': example[prompt_column], 'response': example[response_column]}

    return rename


def resolve_preprocessor(setting: Any, dataset_name: str | None, key: str) -> Preprocessor | None:
    """llm-foundry's rules: a mapping renames columns; a name registered in `preprocessors` is used; any other
    string is 'module:function'; unset, the function registered under the dataset's name (if any)."""
    from llmfoundry.registry import preprocessors

    if isinstance(setting, Mapping):
        return mapping_preprocessor(setting, key)
    if setting is None:
        if dataset_name is not None and dataset_name in preprocessors.names():
            log.info('preprocessing %s with the function registered under its name', dataset_name)
            return preprocessors.get(dataset_name, key)
        return None
    if not isinstance(setting, str):
        raise ConfigError(f'{key} must be a registered name, "module:function" or a {{prompt, response}} mapping')
    if setting in preprocessors.names():
        return preprocessors.get(setting, key)
    module_name, sep, function_name = setting.partition(':')
    if not sep:
        raise ConfigError(f'{key}={setting!r} is neither a registered preprocessor '
                          f'({", ".join(preprocessors.names()) or "none registered"}) nor "module:function"')
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f'{key}={setting!r} cannot be imported: {err}') from err
    if not callable(function):
        raise ConfigError(f'{key}={setting!r} is not callable')
    return function
