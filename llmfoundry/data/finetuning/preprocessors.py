"""llm-foundry's built-in preprocessing functions, one per public dataset; `registry.preprocessors` lists them
under the dataset names (used when `preprocessing_fn` is unset and `hf_name` is one of them).

Each takes one raw example and returns a prompt/response or chat example (formats.py).
"""

from __future__ import annotations

from typing import Any

DOLLY_PROMPT = ('Below is an instruction that describes a task. Write a response that appropriately completes the '
                'request.\n\n### Instruction:\n{instruction}\n\n### Response:\n')
RESPONSE_MARKER = '### Response:'
SHAREGPT_ROLES = {'human': 'user', 'gpt': 'assistant'}


def _columns(example: dict[str, Any], *names: str) -> list[Any]:
    missing = [name for name in names if name not in example]
    if missing:
        raise ValueError(f'the example lacks column(s) {missing}; it has {sorted(example)}')
    return [example[name] for name in names]


def alpaca(example: dict[str, Any]) -> dict[str, str]:
    """'tatsu-lab/alpaca': `text` split at its one '### Response:' (kept at the end of the prompt)."""
    [text] = _columns(example, 'text')
    parts = text.split(RESPONSE_MARKER)
    if len(parts) != 2:
        raise ValueError(f"text must contain '{RESPONSE_MARKER}' exactly once")
    return {'prompt': parts[0] + RESPONSE_MARKER, 'response': parts[1]}


def dolly(example: dict[str, Any]) -> dict[str, str]:
    """'HuggingFaceH4/databricks_dolly_15k': instruction (+ input on its own line) in the Alpaca prompt."""
    instruction, extra, output = _columns(example, 'instruction', 'input', 'output')
    if extra != '':
        instruction = f'{instruction}\n{extra}'
    return {'prompt': DOLLY_PROMPT.format(instruction=instruction), 'response': output}


def p3(example: dict[str, Any]) -> dict[str, str]:
    """'bigscience/P3': inputs followed by a colon."""
    inputs, targets = _columns(example, 'inputs', 'targets')
    return {'prompt': inputs + ':', 'response': targets}


def muennighoff(example: dict[str, Any]) -> dict[str, str]:
    """'Muennighoff/P3', 'Muennighoff/flan': a space between prompt and response unless whitespace is there."""
    prompt, response = _columns(example, 'inputs', 'targets')
    separated = prompt.endswith((' ', '\n', '\t')) or response.startswith((' ', '\n', '\t'))
    return {'prompt': prompt, 'response': response if separated else ' ' + response}


def sharegpt(example: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """'teknium/OpenHermes-2.5': ShareGPT `conversations` of {from, value} -> messages."""
    [conversation] = _columns(example, 'conversations')
    return {'messages': [{'role': SHAREGPT_ROLES.get(turn['from'], turn['from']), 'content': turn['value']}
                         for turn in conversation]}


def question_answer(example: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """'math-ai/StackMathQA': Q and A as one user and one assistant message."""
    question, answer = _columns(example, 'Q', 'A')
    return {'messages': [{'role': 'user', 'content': question}, {'role': 'assistant', 'content': answer}]}


def messages_only(example: dict[str, Any]) -> dict[str, Any]:
    """'AI-MO/NuminaMath-CoT': keep only the messages column."""
    [messages] = _columns(example, 'messages')
    return {'messages': messages}

