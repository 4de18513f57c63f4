"""Gauntlet arithmetic on hand-made accuracies, each expected value worked out in the test."""

from __future__ import annotations

import pytest

from llmfoundry.config.validation import ConfigError
from llmfoundry.eval.gauntlet import gauntlet_scores, parse_gauntlet

SECTION = {
    'weighting': 'EQUAL',
    'subtract_random_baseline': True,
    'rescale_accuracy': True,
    'categories': [
        {'name': 'reading', 'benchmarks': [{'name': 'mc', 'num_fewshot': 3, 'random_baseline': 0.25},
                                           {'name': 'lm', 'num_fewshot': 0, 'random_baseline': 0.0}]},
        {'name': 'world', 'benchmarks': [{'name': 'qa', 'num_fewshot': 5, 'random_baseline': 0.5}]},
        {'name': 'missing', 'benchmarks': [{'name': 'absent', 'num_fewshot': 0, 'random_baseline': 0.0}]},
    ],
}
# mc has two subtasks (categories) averaged into one benchmark score: (0.5 + 1.0) / 2 = 0.75
ACCURACIES = [('mc/3-shot/a', 0.5), ('mc/3-shot/b', 1.0), ('lm/0-shot', 0.4), ('qa/5-shot', 0.8)]
SIZES = {'mc/3-shot/a': 6, 'mc/3-shot/b': 2, 'lm/0-shot': 32, 'qa/5-shot': 10}


def scores(**changes) -> dict[str, float]:
    return gauntlet_scores(parse_gauntlet({**SECTION, **changes}), ACCURACIES, SIZES)


def test_equal_weighting_with_baseline_and_rescaling() -> None:
    mc, lm, qa = (0.75 - 0.25) / 0.75, 0.4, (0.8 - 0.5) / 0.5
    out = scores()
    assert out.keys() == {'icl/metrics/eval_gauntlet/reading', 'icl/metrics/eval_gauntlet/world',
                          'icl/metrics/eval_gauntlet/default_average'}  # 'missing' has no results
    assert out['icl/metrics/eval_gauntlet/reading'] == pytest.approx((mc + lm) / 2)
    assert out['icl/metrics/eval_gauntlet/world'] == pytest.approx(qa)
    assert out['icl/metrics/eval_gauntlet/default_average'] == pytest.approx(((mc + lm) / 2 + qa) / 2)


def test_size_weightings_and_raw_scores() -> None:
    mc, lm = 0.75 - 0.25, 0.4  # baseline subtracted, not rescaled
    out = scores(weighting='SAMPLE_SZ', rescale_accuracy=False)
    assert out['icl/metrics/eval_gauntlet/reading'] == pytest.approx((mc * 8 + lm * 32) / 40)
    out = scores(weighting='LOG_SAMPLE_SZ', subtract_random_baseline=False, rescale_accuracy=False)
    assert out['icl/metrics/eval_gauntlet/reading'] == pytest.approx((0.75 * 3 + 0.4 * 5) / 8)  # log2 8, log2 32
    assert out['icl/metrics/eval_gauntlet/world'] == pytest.approx(0.8)


def test_named_averages() -> None:
    out = scores(averages={'core': ['world', 'missing'], 'none': ['missing']})
    assert out['icl/metrics/eval_gauntlet/core'] == pytest.approx((0.8 - 0.5) / 0.5)
    assert out['icl/metrics/eval_gauntlet/none'] == 0.0
    assert 'icl/metrics/eval_gauntlet/default_average' not in out


@pytest.mark.parametrize(('changes', 'message'), [
    ({'weighting': 'LOUD'}, 'expected one of EQUAL, SAMPLE_SZ, LOG_SAMPLE_SZ'),
    ({'subtract_random_baseline': False}, 'rescale_accuracy'),
    ({'averages': {'world': ['reading']}}, 'reuses category names'),
    ({'categories': [{'name': 'x', 'benchmarks': [{'name': 'b', 'num_fewshot': 0}]}]}, 'random_baseline'),
])
def test_bad_gauntlet_sections(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_gauntlet({**SECTION, **changes})
