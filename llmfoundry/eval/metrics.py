"""llm-foundry's ICL metrics under their class names: counts of correct and total examples, summed over ranks.

Each metric scores what the model produced for one example (scoring.py computes it): logits at the
continuation positions, or a generated text.
"""

from __future__ import annotations

import re
import string
from typing import ClassVar

import torch
import torch.nn.functional as F

from llmfoundry.train.distributed import all_reduce_sum


class InContextLearningMetric:
    """correct / total; `kind` says which task types it can score ('lm', 'choice' or 'generation')."""

    kind: ClassVar[str]

    def __init__(self) -> None:
        self.correct = 0.0
        self.total = 0.0

    def add(self, correct: bool) -> None:
        self.correct += float(correct)
        self.total += 1.0

    def sync(self, device: torch.device | str = 'cpu') -> None:
        """Sum the counts over ranks (no-op in one process): every rank then computes the same value. `device` is
        where the process group communicates (a CUDA device under nccl)."""
        counts = all_reduce_sum(torch.tensor([self.correct, self.total], dtype=torch.float64, device=device))
        self.correct, self.total = counts.tolist()

    def compute(self) -> float:
        return self.correct / self.total if self.total else float('nan')


class InContextLearningLMAccuracy(InContextLearningMetric):
    """Right when the greedy (argmax) token equals the continuation token at every continuation position."""

    kind = 'lm'

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """`logits` [n, vocab] predict the n continuation tokens `targets`."""
        self.add(bool((logits.argmax(dim=-1) == targets).all()))


class InContextLearningMultipleChoiceAccuracy(InContextLearningMetric):
    """Right when the gold choice has the lowest perplexity (exp of the mean token cross-entropy); the first
    of equal choices wins."""

    kind = 'choice'

    def update(self, choices: list[tuple[torch.Tensor, torch.Tensor]], gold: int) -> None:
        """`choices`: (logits [n, vocab], targets [n]) per choice."""
        perplexities = [torch.exp(F.cross_entropy(logits.float(), targets)).item() for logits, targets in choices]
        self.add(perplexities.index(min(perplexities)) == gold)


PUNCTUATION = set(string.punctuation + '‘’´`')


def normalize_answer(text: str) -> str:
    """TriviaQA's normalisation as llm-foundry applies it: underscores to spaces, lower case, punctuation to
    spaces, articles (a, an, the) removed, whitespace collapsed."""
    text = text.replace('_', ' ').lower()
    text = ''.join(' ' if ch in PUNCTUATION else ch for ch in text)
    text = re.sub(r'\b(a|an|the)\b', ' ', text)
    return ' '.join(text.split()).strip()


class InContextLearningGenerationExactMatchAccuracy(InContextLearningMetric):
    """Right when the generated answer, cut at the first stop sequence and after the last chain-of-thought
    delimiter and then normalised, starts with one of the normalised accepted answers."""

    kind = 'generation'

    def update(self, output: str, labels: list[str], *, stop_sequences: list[str] | None = None,
               cot_delimiter: str = '', do_normalization: bool = True) -> None:
        answer = output
        if stop_sequences:
            # llm-foundry joins the stop sequences into one regular expression, unescaped
            answer = re.split('|'.join(stop_sequences), answer)[0]
        if cot_delimiter:
            answer = answer.split(cot_delimiter)[-1]
        clean = normalize_answer if do_normalization else str.strip
        answer = clean(answer)
        self.add(any(answer.startswith(clean(label)) for label in labels))


METRICS: dict[str, type[InContextLearningMetric]] = {
    cls.__name__: cls for cls in (InContextLearningLMAccuracy, InContextLearningMultipleChoiceAccuracy,
                                  InContextLearningGenerationExactMatchAccuracy)
}
