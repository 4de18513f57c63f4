"""Schedules equal Composer's / llm-foundry's closed forms at chosen steps; time units convert as Composer's do."""

from __future__ import annotations

import math

import pytest
import torch

from llmfoundry.config.time import Time, Timestamp
from llmfoundry.optim import apply_lr, build_optimizer, build_scheduler

MAX = Time.parse('100ba')


def values(cfg: dict, batches: list[int], max_duration: Time = MAX, **kwargs) -> list[float]:
    scheduler = build_scheduler(cfg)
    return [scheduler(Timestamp(batch=b), max_duration, **kwargs) for b in batches]


def cosine(tau: float, alpha_f: float) -> float:
    return alpha_f + (1 - alpha_f) * 0.5 * (1 + math.cos(math.pi * tau))


def test_cosine_with_warmup_closed_form():
    got = values({'name': 'cosine_with_warmup', 't_warmup': '10ba', 'alpha_f': 0.1}, [0, 1, 5, 9, 10, 30, 55, 99, 100])
    expected = [0.0, 0.1, 0.5, 0.9, 1.0, cosine(20 / 90, 0.1), cosine(0.5, 0.1), cosine(89 / 90, 0.1), 0.1]
    assert got == pytest.approx(expected, abs=1e-12)


def test_cosine_past_t_max_stays_at_alpha_f():
    assert values({'name': 'cosine_with_warmup', 't_warmup': '0ba', 'alpha_f': 0.2}, [0, 100, 150]) == pytest.approx(
        [1.0, 0.2, 0.2])


def test_linear_decay_with_warmup_closed_form():
    cfg = {'name': 'linear_decay_with_warmup', 't_warmup': '20ba', 'alpha_i': 0.8, 'alpha_f': 0.2}
    got = values(cfg, [0, 10, 20, 60, 100])
    # warmup rises to alpha_i, then alpha_i + (alpha_f - alpha_i) * (t - 20) / 80
    assert got == pytest.approx([0.0, 0.4, 0.8, 0.8 - 0.6 * 40 / 80, 0.2])


def test_constant_with_warmup_holds_alpha_through_and_after_t_max():
    got = values({'name': 'constant_with_warmup', 't_warmup': '4ba', 'alpha': 0.5}, [0, 2, 4, 50, 100, 120])
    assert got == pytest.approx([0.0, 0.25, 0.5, 0.5, 0.5, 0.5])


def test_warmup_stable_decay_closed_form():
    cfg = {'name': 'warmup_stable_decay', 't_warmup': '10ba', 't_cooldown': '20ba', 'alpha_f': 0.1}
    got = values(cfg, [0, 5, 10, 50, 79, 80, 90, 100])
    assert got == pytest.approx([0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0 - 0.9 * 10 / 20, 0.1])


def test_warmup_stable_decay_rejects_overlapping_phases():
    scheduler = build_scheduler({'name': 'warmup_stable_decay', 't_warmup': '60ba', 't_cooldown': '0.5dur'})
    with pytest.raises(ValueError, match='t_warmup \\+ t_cooldown'):
        scheduler(Timestamp(batch=0), MAX)


@pytest.mark.parametrize(
    ('cfg', 'batches', 'expected'),
    [
        # llm-foundry's own test values for InverseSquareRootWithWarmupScheduler
        ({'t_warmup': '10ba', 't_scale': '10ba', 't_cooldown': '0ba'}, [0, 5, 10, 40, 90, 100],
         [0.0, 0.5, 1.0, 0.5, 1 / 3, 1 / math.sqrt(10)]),
        ({'t_warmup': '20ba', 't_scale': '2ba', 't_cooldown': '10ba', 'alpha_f_decay': 0.4, 'alpha_f_cooldown': 0.1},
         [0, 10, 20, 36, 90, 95, 100], [0.0, 0.5, 1.0, 0.6, 0.5, 0.3, 0.1]),
    ],
)
def test_inv_sqrt_with_warmup_closed_form(cfg, batches, expected):
    assert values({'name': 'inv_sqrt_with_warmup', **cfg}, batches) == pytest.approx(expected, abs=1e-12)


def test_inv_sqrt_rejects_dur_and_mismatched_units():
    with pytest.raises(ValueError, match="scheduler.t_scale cannot be in 'dur'"):
        build_scheduler({'name': 'inv_sqrt_with_warmup', 't_warmup': '1ba', 't_scale': '0.1dur', 't_cooldown': '0ba'})
    with pytest.raises(ValueError, match='alpha_f_decay'):
        build_scheduler({'name': 'inv_sqrt_with_warmup', 't_warmup': '1ba', 't_scale': '1ba', 't_cooldown': '0ba',
                         'alpha_f_cooldown': 0.5})
    scheduler = build_scheduler({'name': 'inv_sqrt_with_warmup', 't_warmup': '10ba', 't_scale': '10ba',
                                 't_cooldown': '0ba'})
    with pytest.raises(ValueError, match='unit of max_duration'):
        scheduler(Timestamp(), Time.parse('1000tok'))


def test_dur_converts_with_composers_truncation():
    # 0.05dur of 250ba is int(12.5) = 12 batches, as Composer's _convert_time truncates.
    got = values({'name': 'linear_decay_with_warmup', 't_warmup': '0.05dur'}, [6, 12, 131], Time.parse('250ba'))
    assert got == pytest.approx([0.5, 1.0, 1 - 119 / 238])


def test_epoch_max_duration_runs_on_batches():
    # max_duration 2ep of 50 batches: '1dur' is 100 batches, '0.1dur' 10 batches, so the lr moves every batch.
    cfg = {'name': 'cosine_with_warmup', 't_warmup': '0.1dur'}
    got = values(cfg, [5, 10, 55], Time.parse('2ep'), batches_per_epoch=50)
    assert got == pytest.approx([0.5, 1.0, cosine(0.5, 0.0)])
    with pytest.raises(ValueError, match='batches_per_epoch'):
        values(cfg, [5], Time.parse('2ep'))


def test_token_units_follow_the_token_count():
    scheduler = build_scheduler({'name': 'cosine_with_warmup', 't_warmup': '1000tok'})
    max_duration = Time.parse('11000tok')
    assert scheduler(Timestamp(batch=3, token=250), max_duration) == pytest.approx(0.25)
    assert scheduler(Timestamp(batch=99, token=6000), max_duration) == pytest.approx(cosine(0.5, 0.0))


def test_warmup_and_t_max_units_must_agree_and_t_max_cover_the_run():
    with pytest.raises(ValueError, match='one unit'):
        values({'name': 'cosine_with_warmup', 't_warmup': '10ba'}, [0], Time.parse('1000tok'))
    with pytest.raises(ValueError, match='shorter than max_duration'):
        values({'name': 'cosine_with_warmup', 't_warmup': '10ba', 't_max': '50ba'}, [0])


def test_first_step_uses_t_zero_and_apply_lr_scales_initial_lr():
    """The documented off-by-one: step k runs at the multiplier for k-1 completed batches."""
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer({'name': 'decoupled_adamw', 'lr': 0.01, 'param_groups': [
        {'param_str_match': 'bias', 'lr': 0.1}]}, model)
    scheduler = build_scheduler({'name': 'linear_decay_with_warmup', 't_warmup': '4ba'})
    seen = []
    timestamp = Timestamp()
    for _ in range(5):
        apply_lr(optimizer, scheduler(timestamp, MAX))
        seen.append([group['lr'] for group in optimizer.param_groups])
        timestamp = timestamp.after_batch(samples=1, tokens=1)
    assert [lrs[0] for lrs in seen] == pytest.approx([0.0, 0.0025, 0.005, 0.0075, 0.01])
    assert [lrs[1] for lrs in seen] == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1])


@pytest.mark.parametrize(
    ('cfg', 'message'),
    [
        ({'name': 'cosine_with_warmup', 't_warmup': '1ba', 'alpha': 0.1},
         "unknown key 'scheduler.alpha'; did you mean 'scheduler.alpha_f'\\?.*accepted: alpha_f, name, scale_warmup"),
        ({'name': 'cosine_warmup', 't_warmup': '1ba'},
         "unknown scheduler.name='cosine_warmup'; did you mean 'cosine_with_warmup'.*registered: constant_with_warmup"),
        ({'name': 'cosine_with_warmup'}, 'requires scheduler.t_warmup'),
        ({'name': 'cosine_with_warmup', 't_warmup': '10 batches'}, "scheduler.t_warmup='10 batches' is not a time"),
        ({'name': 'cosine_with_warmup', 't_warmup': '1ba', 'alpha_f': 'low'}, "scheduler.alpha_f='low' must be a num"),
        ({'name': 'cosine_with_warmup', 't_warmup': '1ba', 'scale_warmup': 1}, 'scale_warmup=1 must be true or false'),
    ],
)
def test_config_errors(cfg, message):
    with pytest.raises(ValueError, match=message):
        build_scheduler(cfg)
