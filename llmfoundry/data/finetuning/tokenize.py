"""A formatted example -> its turns: [{'input_ids': prompt ids, 'labels': response ids}, ...], as llm-foundry.

Prompt/response: one turn; prompt and response are tokenised separately with the tokenizer's special tokens, and
when both start with BOS the response's BOS is dropped (the prompt keeps it). Chat: the conversation is rendered
with the tokenizer's chat template (ChatML when it has none); each assistant message ends a turn whose prompt is
the text added since the previous turn up to the generation prompt, and whose response is the assistant's rendered
message; no special tokens are added (the template writes its own).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Protocol

from llmfoundry.data.finetuning.formats import chat_messages, example_type, prompt_response

Turn = dict[str, list[int]]


class TurnTokenizer(Protocol):
    """What tokenising an example uses of a tokenizer: a transformers tokenizer, or the converter's
    (llmfoundry.data.finetuning.prep_tokenizer), which needs transformers only for chat templates."""

    @property
    def bos_token_id(self) -> int | None: ...

    @property
    def chat_template(self) -> Any: ...

    def __call__(self, text: str, add_special_tokens: bool = True) -> Mapping[str, Any]: ...

    def apply_chat_template(self, conversation: list[dict[str, Any]], **kwargs: Any) -> Any: ...


CHATML_TEMPLATE = (
    '{% for message in messages %}'
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    '{% endfor %}'
    '{% if add_generation_prompt %}'
    "{{ '<|im_start|>assistant\n' }}"
    '{% endif %}'
)


def tokenize_example(example: dict[str, Any], tokenizer: TurnTokenizer) -> list[Turn]:
    """The turns of a prompt/response or chat example; ValueError saying what is wrong with it."""
    if example_type(example) == 'chat':
        return [_encode(tokenizer, prompt, response, special_tokens=False)
                for prompt, response in chat_turns(example, tokenizer)]
    prompt, response = prompt_response(example)
    return [_encode(tokenizer, prompt, response, special_tokens=True)]


def _encode(tokenizer: TurnTokenizer, prompt: str, response: str, special_tokens: bool) -> Turn:
    prompt_ids = list(tokenizer(prompt, add_special_tokens=special_tokens)['input_ids'])
    response_ids = list(tokenizer(response, add_special_tokens=special_tokens)['input_ids'])
    bos = tokenizer.bos_token_id
    if special_tokens and bos is not None and prompt_ids[:1] == [bos] and response_ids[:1] == [bos]:
        response_ids = response_ids[1:]  # one BOS per example, at its start
    return {'input_ids': prompt_ids, 'labels': response_ids}


def chat_turns(example: dict[str, Any], tokenizer: TurnTokenizer) -> list[tuple[str, str]]:
    """(prompt text, response text) per assistant message; their concatenation is the rendered conversation."""
    messages = chat_messages(example)
    turns: list[tuple[str, str]] = []
    done = ''  # the rendered conversation through the previous turn
    for end, message in enumerate(messages):
        if message['role'] != 'assistant':
            continue
        full = render_chat(tokenizer, messages[:end + 1], generation_prompt=False)
        prompt_with_history = render_chat(tokenizer, messages[:end], generation_prompt=True)
        if not (full.startswith(prompt_with_history) and prompt_with_history.startswith(done)):
            raise ValueError('the chat template does not render the conversation incrementally (each turn must '
                             'extend the text of the turns before it), so turns cannot be masked separately')
        turns.append((prompt_with_history[len(done):], full[len(prompt_with_history):]))
        done = full
    return turns


def render_chat(tokenizer: TurnTokenizer, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
    template = None if getattr(tokenizer, 'chat_template', None) else CHATML_TEMPLATE
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt, chat_template=template,
            date_string=datetime.date.today().strftime('%d %b %Y'),  # templates such as Llama 3's read it
        )  # fmt: skip
    except Exception as err:  # jinja raises its own types (and templates raise what they like)
        raise ValueError(f'the chat template failed on this conversation: {err}') from err
