"""llm-foundry's ICL task types: which fields a task file has, how prompts are written and tokenised.

Each type turns the (stripped) records of one task file into examples for one shot count:
language_modeling -> Request; multiple_choice and schema -> Choices; generation_task_with_answers -> Prompt;
code_evaluation -> CodeProblem.
The few-shot generator is consumed in file order over all examples, so every rank builds every example's
prompt (cheap) and then scores only its own share.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any, ClassVar

from transformers import PreTrainedTokenizerBase

from .prompts import Request, encode, encode_preamble, fewshot_indices, needs_prefix_space, trimmed, with_space
from .task_config import IclTaskConfig

# A generated answer may run this many tokens past the longest reference when a chain of thought is asked for, and
# generated code past the longest canonical solution.
COT_ANSWER_BUFFER = CODE_ANSWER_BUFFER = 10


@dataclass(frozen=True)
class Choices:
    """One question: a request per choice (or per context option for schema) and the index of the right one."""
    requests: list[Request]
    gold: int


@dataclass(frozen=True)
class Prompt:
    """One generation example: the prompt's tokens and the accepted answers."""
    context: list[int]
    labels: list[str]


@dataclass(frozen=True)
class CodeProblem:
    """One code_evaluation example: the prompt's tokens, the problem's own code prompt (what a generation
    continues, and what is executed with it) and its test cases."""
    context: list[int]
    prompt: str
    entry_point: str
    test_inputs: list[str]
    test_outputs: list[str]


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


class IclTask:
    """Shared flow: check records, build the few-shot prompt, then the type's own context and tokens."""

    kind: ClassVar[str]  # 'lm', 'choice', 'generation' or 'code': which metrics can score it
    default_metric: ClassVar[str]
    fields: ClassVar[tuple[str, ...]]

    def __init__(self, config: IclTaskConfig, tokenizer: PreTrainedTokenizerBase) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.prefix_space = needs_prefix_space(tokenizer)

    def check(self, record: dict[str, Any]) -> str | None:
        """Why `record` cannot be used, or None."""
        missing = [name for name in self.fields if name not in record]
        if missing:
            return f"missing field{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)}"
        return None

    def examples(self, records: list[dict[str, Any]], num_fewshot: int, where: str) -> list[Any]:
        """One example per record for `num_fewshot` shots; `where` names the file in errors."""
        rng = random.Random(self.config.fewshot_random_seed)
        out = []
        for index, record in enumerate(records):
            preamble = self.config.prompt_string
            if num_fewshot > 0:
                for shot in fewshot_indices(len(records), num_fewshot, index, rng):
                    preamble += self.shot_text(records[shot], preamble)
            out.append(self.example(record, preamble, f'{where}, example {index + 1}'))
        return out

    def context_text(self, record: dict[str, Any], preceding: str) -> str:
        """llm-foundry's context: [example_delimiter] prelimiter context continuation_delimiter."""
        text = f'{self.config.prelimiter}{record[self.fields[0]]}'
        if preceding:
            text = f'{self.config.example_delimiter}{text}'
        return f'{text}{self.config.continuation_delimiter}'

    def shot_text(self, record: dict[str, Any], preceding: str) -> str:
        return self.context_text(record, preceding) + self.shot_answer(record)

    def shot_answer(self, record: dict[str, Any]) -> str:
        raise NotImplementedError

    def example(self, record: dict[str, Any], preamble: str, where: str) -> Any:
        raise NotImplementedError

    def context_tokens(self, record: dict[str, Any], preamble: str) -> list[int]:
        context = self.context_text(record, preamble)
        if self.config.strip_dataset:
            context = context.rstrip()
        return encode_preamble(self.tokenizer, preamble) + encode(self.tokenizer, context)


class LanguageModelingTask(IclTask):
    kind = 'lm'
    default_metric = 'InContextLearningLMAccuracy'
    fields = ('context', 'continuation')

    def check(self, record: dict[str, Any]) -> str | None:
        problem = super().check(record)
        if problem is None and not all(isinstance(record[f], str) for f in self.fields):
            return "'context' and 'continuation' must be strings"
        return problem

    def shot_answer(self, record: dict[str, Any]) -> str:
        return record['continuation']

    def example(self, record: dict[str, Any], preamble: str, where: str) -> Request:
        continuation = encode(self.tokenizer, with_space(record['continuation'], self.prefix_space))
        return trimmed(self.context_tokens(record, preamble), continuation, self.config.max_seq_len, where)


class MultipleChoiceTask(IclTask):
    kind = 'choice'
    default_metric = 'InContextLearningMultipleChoiceAccuracy'
    fields = ('query', 'choices', 'gold')

    def check(self, record: dict[str, Any]) -> str | None:
        problem = super().check(record)
        if problem is not None:
            return problem
        if not isinstance(record['query'], str) or not _is_str_list(record['choices']):
            return "'query' must be a string and 'choices' a non-empty list of strings"
        return _gold_problem(record['gold'], len(record['choices']), 'choices')

    def shot_answer(self, record: dict[str, Any]) -> str:
        return record['choices'][record['gold']]

    def example(self, record: dict[str, Any], preamble: str, where: str) -> Choices:
        context = self.context_tokens(record, preamble)
        requests = [trimmed(context, encode(self.tokenizer, with_space(choice, self.prefix_space)),
                            self.config.max_seq_len, where) for choice in record['choices']]
        return Choices(requests, record['gold'])


class SchemaTask(IclTask):
    """Partial evaluation (Trinh & Le, 2018): one continuation scored after each context option."""

    kind = 'choice'
    default_metric = 'InContextLearningMultipleChoiceAccuracy'
    fields = ('context_options', 'continuation', 'gold')

    def check(self, record: dict[str, Any]) -> str | None:
        problem = super().check(record)
        if problem is not None:
            return problem
        if not _is_str_list(record['context_options']) or not isinstance(record['continuation'], str):
            return "'context_options' must be a non-empty list of strings and 'continuation' a string"
        return _gold_problem(record['gold'], len(record['context_options']), 'context_options')

    def shot_text(self, record: dict[str, Any], preceding: str) -> str:
        # llm-foundry puts the prelimiter before the example delimiter here (unlike the other types)
        option = record['context_options'][record['gold']]
        delimiter = self.config.example_delimiter if preceding else ''
        return (f"{self.config.prelimiter}{delimiter}{option}{self.config.continuation_delimiter}"
                f"{record['continuation']}")

    def option_texts(self, record: dict[str, Any], preamble: str) -> list[str]:
        prelimiter = self.config.prelimiter
        if not preamble:
            return [f'{prelimiter}{option}' for option in record['context_options']]
        delimiter = self.config.continuation_delimiter
        if self.config.strip_dataset:
            delimiter = delimiter.rstrip()
        return [f'{prelimiter}{self.config.example_delimiter}{option}{delimiter}'
                for option in record['context_options']]

    def example(self, record: dict[str, Any], preamble: str, where: str) -> Choices:
        start = encode_preamble(self.tokenizer, preamble)
        continuation = encode(self.tokenizer, with_space(record['continuation'], self.prefix_space))
        requests = [trimmed(start + encode(self.tokenizer, text), continuation, self.config.max_seq_len, where)
                    for text in self.option_texts(record, preamble)]
        return Choices(requests, record['gold'])


class GenerationTask(IclTask):
    kind = 'generation'
    default_metric = 'InContextLearningGenerationExactMatchAccuracy'
    fields = ('context', 'answer')

    def check(self, record: dict[str, Any]) -> str | None:
        problem = super().check(record)
        if problem is not None:
            return problem
        if not isinstance(record['context'], str) or not isinstance(record['answer'], str):
            return "'context' and 'answer' must be strings"
        if 'aliases' in record and not (isinstance(record['aliases'], list)
                                        and all(isinstance(a, str) for a in record['aliases'])):
            return "'aliases' must be a list of strings"
        return None

    def examples(self, records: list[dict[str, Any]], num_fewshot: int, where: str) -> list[Any]:
        # A chain of thought is used as soon as any record has one, as llm-foundry's dataset columns do.
        self.has_cot = any('chain_of_thought' in record for record in records)
        self.max_answer_tokens = self._max_answer_tokens(records)
        return super().examples(records, num_fewshot, where)

    def _answer(self, record: dict[str, Any], answer: str) -> str:
        if self.has_cot:
            return f"{record.get('chain_of_thought') or ''}{self.config.cot_delimiter}{answer}"
        return answer

    def _max_answer_tokens(self, records: list[dict[str, Any]]) -> int:
        longest = max(len(self.tokenizer(self._answer(record, answer))['input_ids'])
                      for record in records for answer in labels_of(record))
        return longest + (COT_ANSWER_BUFFER if self.config.cot_delimiter else 0)

    def shot_answer(self, record: dict[str, Any]) -> str:
        return self._answer(record, record['answer'])

    def example(self, record: dict[str, Any], preamble: str, where: str) -> Prompt:
        # the prompt leaves room for the longest answer; max_seq_len grows to that answer if it is shorter
        room = max(self.config.max_seq_len, self.max_answer_tokens) - self.max_answer_tokens
        context = trimmed(self.context_tokens(record, preamble), [], room, where).context
        return Prompt(context, labels_of(record))


def labels_of(record: dict[str, Any]) -> list[str]:
    """The answer and its aliases, each once, in first-seen order."""
    return list(dict.fromkeys([record['answer'], *record.get('aliases', [])]))


def _gold_problem(gold: Any, count: int, field: str) -> str | None:
    if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < count:
        return f"'gold' must be an index into '{field}' (0 to {count - 1}), got {gold!r}"
    return None


class CodeEvalTask(IclTask):
    """HumanEval-style problems: the model completes `prompt`, the completion is run against the test cases
    (metrics.InContextLearningCodeEvalAccuracy, code_execution.py). Python only."""

    kind = 'code'
    default_metric = 'InContextLearningCodeEvalAccuracy'
    fields = ('prompt', 'entry_point', 'canonical_solution', 'test_inputs', 'test_outputs', 'language')

    def __init__(self, config: IclTaskConfig, tokenizer: PreTrainedTokenizerBase) -> None:
        # whitespace is code: never stripped (llm-foundry turns strip_dataset off for this type)
        super().__init__(dataclasses.replace(config, strip_dataset=False), tokenizer)

    def check(self, record: dict[str, Any]) -> str | None:
        problem = super().check(record)
        if problem is not None:
            return problem
        if not all(isinstance(record[name], str) for name in ('prompt', 'entry_point', 'canonical_solution',
                                                               'language')):
            return "'prompt', 'entry_point', 'canonical_solution' and 'language' must be strings"
        inputs, outputs = record['test_inputs'], record['test_outputs']
        if not (_is_str_list(inputs) and _is_str_list(outputs) and len(inputs) == len(outputs)):
            return "'test_inputs' and 'test_outputs' must be non-empty lists of strings of the same length"
        if record['language'] != 'python':
            return (f"language {record['language']!r}: only python code runs here (llm-foundry's c++, javascript "
                    'and c executors are not built)')
        return None

    def examples(self, records: list[dict[str, Any]], num_fewshot: int, where: str) -> list[Any]:
        solutions = (self.tokenizer(record['canonical_solution'], add_special_tokens=False)['input_ids']
                     for record in records)
        self.max_answer_tokens = max(len(tokens) for tokens in solutions) + CODE_ANSWER_BUFFER
        problems = super().examples(records, num_fewshot, where)
        self.max_prompt_tokens = max(len(problem.context) for problem in problems)  # over every rank's share
        return problems

    def shot_answer(self, record: dict[str, Any]) -> str:
        return record['canonical_solution']

    def example(self, record: dict[str, Any], preamble: str, where: str) -> CodeProblem:
        context = trimmed(self.context_tokens(record, preamble), [], self.config.max_seq_len, where).context
        return CodeProblem(context, record['prompt'], record['entry_point'], record['test_inputs'],
                           record['test_outputs'])

    def max_new_tokens(self) -> int:
        """llm-foundry's default: the longest canonical solution plus a margin, within what max_seq_len leaves."""
        return max(1, min(self.max_answer_tokens, self.config.max_seq_len - self.max_prompt_tokens))
