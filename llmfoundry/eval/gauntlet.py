"""llm-foundry's eval gauntlet: benchmark accuracies -> category scores -> named averages.

A benchmark's accuracy is the mean over its categories' (subtasks') accuracies; with subtract_random_baseline
its random baseline is subtracted, and with rescale_accuracy the result is divided by (1 - baseline). A category
is the weighted mean of its benchmarks (EQUAL: 1; SAMPLE_SZ: examples; LOG_SAMPLE_SZ: max(log2(examples), 1)),
and is left out when one of its benchmarks has no result. Each named average is the plain mean of the listed
categories that have a score (0 when none has); without `averages` there is one, `default_average`, over all.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from llmfoundry.config.validation import ConfigError, from_dict

log = logging.getLogger(__name__)

WEIGHTINGS = ('EQUAL', 'SAMPLE_SZ', 'LOG_SAMPLE_SZ')
PREFIX = 'icl/metrics/eval_gauntlet'


@dataclass
class Benchmark:
    name: str
    num_fewshot: int
    random_baseline: float

    @property
    def key(self) -> str:
        return f'{self.name}/{self.num_fewshot}-shot'


@dataclass
class Category:
    name: str
    benchmarks: list[Benchmark]


@dataclass
class GauntletConfig:
    categories: list[Category]
    weighting: str = 'EQUAL'
    subtract_random_baseline: bool = True
    rescale_accuracy: bool = True
    averages: dict[str, list[str]] | None = None
    destination_dir: str | None = None  # llm-foundry's download folder for task files; unused here


def parse_gauntlet(section: Any) -> GauntletConfig:
    """`eval_gauntlet` (the mapping under it, or a file's top-level `eval_gauntlet` mapping) as a config."""
    if not isinstance(section, dict) or not isinstance(section.get('categories'), list):
        raise ConfigError("'eval_gauntlet' must be a mapping with a 'categories' list.")
    raw = dict(section)
    raw['categories'] = [_category(entry, i) for i, entry in enumerate(raw['categories'])]
    config = from_dict(GauntletConfig, raw, 'eval_gauntlet')
    if config.weighting not in WEIGHTINGS:
        raise ConfigError(f"'eval_gauntlet.weighting'={config.weighting!r}; expected one of {', '.join(WEIGHTINGS)}.")
    if config.rescale_accuracy and not config.subtract_random_baseline:
        raise ConfigError("'eval_gauntlet.rescale_accuracy' needs 'subtract_random_baseline' (as in llm-foundry).")
    names = {category.name for category in config.categories}
    clash = sorted(names & set(config.averages or {}))
    if clash:
        raise ConfigError(f"'eval_gauntlet.averages' reuses category names {clash}: they must differ.")
    return config


def _category(entry: Any, index: int) -> Category:
    path = f'eval_gauntlet.categories[{index}]'
    if not isinstance(entry, dict):
        raise ConfigError(f"'{path}' must be a mapping with 'name' and 'benchmarks'.")
    benchmarks = entry.get('benchmarks')
    if not isinstance(benchmarks, list):
        raise ConfigError(f"'{path}.benchmarks' must be a list.")
    parsed = [from_dict(Benchmark, b, f'{path}.benchmarks[{j}]') for j, b in enumerate(benchmarks)]
    return from_dict(Category, {**entry, 'benchmarks': parsed}, path)


def benchmark_scores(accuracies: list[tuple[str, float]]) -> dict[str, float]:
    """(evaluator '{label}/{k}-shot[/{category}]', accuracy) pairs, one per accuracy metric, to
    '{label}/{k}-shot' -> the mean of all its pairs (over categories and accuracy metrics alike)."""
    grouped: dict[str, list[float]] = {}
    for name, value in accuracies:
        grouped.setdefault('/'.join(name.split('/')[:2]), []).append(value)
    return {key: sum(values) / len(values) for key, values in grouped.items()}


def _weight(config: GauntletConfig, benchmark: Benchmark, sizes: dict[str, int]) -> float:
    if config.weighting == 'EQUAL':
        return 1.0
    # every evaluator (category) of the benchmark counts; a benchmark without a known size counts 1
    samples = max(sum(n for name, n in sizes.items() if name.startswith(benchmark.key)), 1)
    return float(samples) if config.weighting == 'SAMPLE_SZ' else max(math.log2(samples), 1.0)


def gauntlet_scores(config: GauntletConfig, accuracies: list[tuple[str, float]],
                    sizes: dict[str, int] | None = None) -> dict[str, float]:
    """`icl/metrics/eval_gauntlet/{category}` and `.../{average name}` from (evaluator name, accuracy) pairs
    (see benchmark_scores) and, for the size weightings, examples by evaluator name."""
    scores = benchmark_scores(accuracies)
    categories: dict[str, float] = {}
    for category in config.categories:
        missing = [b.key for b in category.benchmarks if b.key not in scores]
        if missing:
            log.warning('eval gauntlet: category %s left out, no results for %s', category.name, missing)
            continue
        weighted = []
        for benchmark in category.benchmarks:
            score = scores[benchmark.key]
            if config.subtract_random_baseline:
                score -= benchmark.random_baseline
                if config.rescale_accuracy:
                    score /= 1.0 - benchmark.random_baseline
            weighted.append((score, _weight(config, benchmark, sizes or {})))
        total = sum(weight for _, weight in weighted)
        categories[category.name] = sum(score * weight / total for score, weight in weighted)
    averages = config.averages or {'default_average': [c.name for c in config.categories]}
    results = dict(categories)
    for name, members in averages.items():
        present = [categories[c] for c in members if c in categories]
        results[name] = sum(present) / len(present) if present else 0.0
    return {f'{PREFIX}/{name}': value for name, value in results.items()}
