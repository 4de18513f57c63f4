"""What an evaluation reports: llm-foundry's metric names and its markdown tables."""

from __future__ import annotations

from collections.abc import Sequence

from .gauntlet import GauntletConfig, gauntlet_scores
from .runner import TaskResult

COLUMNS = ('Category', 'Benchmark', 'Subtask', 'Accuracy', 'Number few shot', 'Model')


def metric_names(results: Sequence[TaskResult]) -> dict[str, float]:
    """`metrics/{label}/{k}-shot[/{category}]/{MetricClass}` -> value."""
    return {f'metrics/{r.name}/{metric}': value for r in results for metric, value in r.metrics.items()}


def accuracy_pairs(results: Sequence[TaskResult]) -> list[tuple[str, float]]:
    """(evaluator name, value) of every accuracy metric: what the gauntlet aggregates."""
    return [(r.name, value) for r in results for metric, value in r.metrics.items() if 'Accuracy' in metric]


def icl_metrics(results: Sequence[TaskResult], gauntlet: GauntletConfig | None) -> dict[str, float]:
    """What one model's evaluation logs: every metric (metric_names), then the gauntlet's scores."""
    metrics = metric_names(results)
    if gauntlet is not None:
        metrics.update(gauntlet_scores(gauntlet, accuracy_pairs(results), {r.name: r.size for r in results}))
    return metrics


def markdown(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        if value is None:
            return ''
        return f'{value:g}' if isinstance(value, float) else str(value)

    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join(':---' for _ in header) + '|']
    lines += ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows]
    return '\n'.join(lines)


def results_table(results: Sequence[TaskResult], model_name: str, gauntlet: GauntletConfig | None) -> str:
    """One row per benchmark, shot count and accuracy metric; a task with categories gets an 'Average' row
    followed by one row per category (Benchmark left blank), as llm-foundry prints them."""
    taxonomy = {b.name: c.name for c in gauntlet.categories for b in c.benchmarks} if gauntlet else {}
    grouped: dict[tuple[int, str, str], list[tuple[str | None, float]]] = {}
    for result in results:
        for metric, value in result.metrics.items():
            if 'Accuracy' in metric:
                key = (result.num_fewshot, result.label, metric)
                grouped.setdefault(key, []).append((result.category, value))
    rows: list[list[object]] = []
    for (shots, label, _), scores in grouped.items():
        category, shot_text = taxonomy.get(label, ''), f'{shots}-shot'
        if len(scores) == 1 and scores[0][0] is None:
            rows.append([category, label, None, scores[0][1], shot_text, model_name])
            continue
        rows.append([category, label, 'Average', sum(v for _, v in scores) / len(scores), shot_text, model_name])
        rows += [[category, None, sub, value, shot_text, model_name] for sub, value in scores]
    return markdown(COLUMNS, rows)


def loss_table(losses: dict[str, float], model_name: str) -> str:
    """One row per eval loader (its label; '' for a single eval_loader) of the `metrics/eval/...` LM-loss metrics."""
    rows: dict[str, dict[str, float]] = {}
    for name, value in losses.items():
        prefix, metric = name.rsplit('/', 1)
        rows.setdefault(prefix.removeprefix('metrics/eval').strip('/'), {})[metric] = value
    columns = list(dict.fromkeys(metric for row in rows.values() for metric in row))
    return markdown(['Eval loader', *columns, 'Model'],
                    [[label, *(row.get(c) for c in columns), model_name] for label, row in rows.items()])


def gauntlet_table(scores: dict[str, dict[str, float]], gauntlet: GauntletConfig) -> str:
    """One row per model: its named averages, then its category scores, best first by the first average."""
    averages = list(gauntlet.averages or {'default_average': []})
    columns = averages + [c.name for c in gauntlet.categories]
    rows = [[model] + [by_name.get(f'icl/metrics/eval_gauntlet/{c}') for c in columns]
            for model, by_name in scores.items()]
    rows.sort(key=lambda row: -(row[1] if isinstance(row[1], float) else float('-inf')))
    return markdown(['model_name', *columns], rows)
