"""llm-foundry's ICL metrics under their class names: counts of correct and total examples, summed over ranks.

Each metric scores what the model produced for one example (scoring.py computes it): logits at the
continuation positions, or a generated text.
"""

from __future__ import annotations

import math
import re
import string
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F

from llmfoundry.train.distributed import all_reduce_sum

from .code_execution import count_passing

if TYPE_CHECKING:
    from .tasks import CodeProblem


class InContextLearningMetric:
    """correct / total; `kind` says which task types it can score ('lm', 'choice', 'generation' or 'code')."""

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


def first_block(generated: str) -> str:
    """The generated code up to the first line that starts at column 0 with a letter, digit, '#' or '`' (the end of
    the function being written), as llm-foundry cuts it."""
    return re.split(r'\n[A-Za-z0-9#`]', generated)[0]


def pass_at_k(n: int, correct: int, k: int) -> float:
    """The unbiased estimate of pass@k from n samples of which `correct` pass (Chen et al. 2021): the chance that
    k of them drawn without replacement include a passing one."""
    return 1.0 - math.comb(n - correct, k) / math.comb(n, k)


class InContextLearningCodeEvalAccuracy(InContextLearningMetric):
    """pass@k: each of a problem's generations (cut by first_block, after the problem's prompt) runs against every
    test case (code_execution.py); a generation passes when all of them do. The value is the mean over problems of
    the pass@k estimate."""

    kind = 'code'

    def update(self, generations: list[str], problem: CodeProblem, k: int) -> None:
        codes = [problem.prompt + first_block(generated) for generated in generations]
        passing = count_passing(codes, problem.entry_point, list(zip(problem.test_inputs, problem.test_outputs)))
        self.correct += pass_at_k(len(generations), passing, k)
        self.total += 1.0


class InContextLearningExpectedCalibrationError(InContextLearningMetric):
    """Expected calibration error (Guo et al. 2017) as llm-foundry computes it: each example's confidence (defined
    by the subclass) falls into one of `n_buckets` equal buckets of [0, 1]; the result is the mean over examples of
    |accuracy of the example's bucket - the bucket's midpoint| (the midpoint, not the mean confidence, as
    llm-foundry does). 0 is perfectly calibrated."""

    def __init__(self, n_buckets: int = 10) -> None:  # the buckets are the whole state: no correct / total counts
        self.bucket_correct = torch.zeros(n_buckets, dtype=torch.float64)
        self.bucket_totals = torch.zeros(n_buckets, dtype=torch.float64)

    @property
    def total(self) -> float:
        return float(self.bucket_totals.sum())

    def add_confident(self, confidence: float, correct: bool) -> None:
        n_buckets = len(self.bucket_totals)
        bucket = min(int(confidence * n_buckets), n_buckets - 1)  # confidence 1.0 goes in the top bucket
        self.bucket_correct[bucket] += float(correct)
        self.bucket_totals[bucket] += 1.0

    def sync(self, device: torch.device | str = 'cpu') -> None:
        counts = all_reduce_sum(torch.cat([self.bucket_correct, self.bucket_totals]).to(device))
        self.bucket_correct, self.bucket_totals = counts.cpu().chunk(2)

    def compute(self) -> float:
        if not self.total:
            return float('nan')
        n_buckets = len(self.bucket_totals)
        midpoints = (torch.arange(n_buckets, dtype=torch.float64) + 0.5) / n_buckets
        filled = self.bucket_totals > 0
        accuracy = self.bucket_correct[filled] / self.bucket_totals[filled]
        return float((self.bucket_totals[filled] / self.total * (accuracy - midpoints[filled]).abs()).sum())


class InContextLearningMCExpectedCalibrationError(InContextLearningExpectedCalibrationError):
    """Multiple choice: a choice's probability is the mean of its continuation tokens' probabilities; the
    prediction is the most probable choice (the first of equals), its confidence that probability over the sum of
    all choices' (llm-foundry's definition; note it ranks choices by mean probability, not by perplexity)."""

    kind = 'choice'

    def update(self, choices: list[tuple[torch.Tensor, torch.Tensor]], gold: int) -> None:
        probabilities = [logits.float().softmax(dim=-1).gather(-1, targets[:, None]).mean().item()
                         for logits, targets in choices]
        best = max(probabilities)
        self.add_confident(best / sum(probabilities), probabilities.index(best) == gold)


class InContextLearningLMExpectedCalibrationError(InContextLearningExpectedCalibrationError):
    """Language modelling: the confidence is the lowest, over the continuation's positions, of the greedy token's
    probability; right when every greedy token is the continuation's."""

    kind = 'lm'

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        probabilities = logits.float().softmax(dim=-1)
        confidence = probabilities.max(dim=-1).values.min().item()
        self.add_confident(confidence, bool((probabilities.argmax(dim=-1) == targets).all()))


METRICS: dict[str, type[InContextLearningMetric]] = {
    cls.__name__: cls for cls in (InContextLearningLMAccuracy, InContextLearningMultipleChoiceAccuracy,
                                  InContextLearningGenerationExactMatchAccuracy,
                                  InContextLearningMCExpectedCalibrationError,
                                  InContextLearningLMExpectedCalibrationError, InContextLearningCodeEvalAccuracy)
}
