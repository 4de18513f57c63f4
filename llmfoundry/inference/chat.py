"""A multi-turn conversation rendered with the tokenizer's chat template (ChatML when it has none)."""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedTokenizerBase

from llmfoundry.data.finetuning.tokenize import render_chat  # the same rendering the finetuning data gets

from .generation import BatchResult, GenerationSettings, generate

# ChatML closes each message with this token; stopping there ends the assistant's turn.
END_OF_TURN = '<|im_end|>'


class ChatSession:
    """The conversation so far: `add_user` a turn, then `answer` it."""

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, settings: GenerationSettings,
                 system_prompt: str | None = None) -> None:
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.messages: list[dict[str, str]] = [{'role': 'system', 'content': system_prompt}] if system_prompt else []
        vocab = tokenizer.get_vocab()
        self.stop_ids = [vocab[END_OF_TURN]] if END_OF_TURN in vocab else []

    def prompt(self) -> str:
        """The rendered conversation, ending with the assistant's generation prompt."""
        return render_chat(self.tokenizer, self.messages, generation_prompt=True)

    def add_user(self, message: str) -> None:
        self.messages.append({'role': 'user', 'content': message})

    def answer(self) -> BatchResult:
        """Generate the assistant's next message and add it to the conversation."""
        # The template writes its own special tokens, so none are added when encoding.
        result = generate(self.model, self.tokenizer, [self.prompt()], self.settings, add_special_tokens=False,
                          extra_stop_ids=self.stop_ids)
        self.messages.append({'role': 'assistant', 'content': result.generations[0].text.strip()})
        return result
