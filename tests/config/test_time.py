"""Composer time strings parse to the documented values; intervals fire where Composer's do."""

from __future__ import annotations

import pytest

from llmfoundry.config.time import Time, Timestamp, TimeUnit, crossed, fraction_complete, reached, to_units_of


@pytest.mark.parametrize(
    ('text', 'value', 'unit'),
    [
        ('1ep', 1, TimeUnit.EPOCH), ('100ba', 100, TimeUnit.BATCH), ('2048sp', 2048, TimeUnit.SAMPLE),
        ('10000tok', 10000, TimeUnit.TOKEN), ('0.5dur', 0.5, TimeUnit.DURATION), ('1dur', 1.0, TimeUnit.DURATION),
        ('.25dur', 0.25, TimeUnit.DURATION), ('1e3ba', 1000, TimeUnit.BATCH), (' 63900ba ', 63900, TimeUnit.BATCH),
        (3, 3, TimeUnit.EPOCH), (0, 0, TimeUnit.EPOCH),
    ],
)
def test_every_form_parses(text, value, unit):
    time = Time.parse(text)
    assert (time.value, time.unit) == (value, unit)
    assert type(time.value) is (float if unit is TimeUnit.DURATION else int)


@pytest.mark.parametrize(
    ('text', 'message'),
    [
        ('100', "max_duration='100' is not a time string; write a number and a unit"),
        ('10 batches', 'is not a time string'),
        ('1.5ep', "'ep' counts whole units; use an integer"),
        ('-3ba', 'is not a time string'),
        (-1, 'must not be negative'),
        (1.5, 'is not a time: use an integer number of epochs'),
        (True, 'is not a time'),
    ],
)
def test_bad_time_strings_explain_the_fix(text, message):
    with pytest.raises(ValueError, match=message.replace('(', r'\(')):
        Time.parse(text, path='max_duration')


def test_str_round_trips():
    assert str(Time.parse('100ba')) == '100ba' and str(Time.parse('0.5dur')) == '0.5dur'


def test_duration_fractions_convert_to_max_duration_units():
    assert to_units_of(Time.parse('0.25dur'), Time.parse('200ba')) == Time(50.0, TimeUnit.BATCH)
    assert to_units_of(Time.parse('10ba'), Time.parse('2ep')) == Time(10, TimeUnit.BATCH)
    stamp = Timestamp(epoch=0, batch=50, sample=400, token=51200)
    assert fraction_complete(stamp, Time.parse('200ba')) == 0.25
    assert fraction_complete(stamp, Time.parse('102400tok')) == 0.5
    assert reached(stamp, Time.parse('0.25dur'), Time.parse('200ba'))
    assert not reached(stamp, Time.parse('51ba'), Time.parse('200ba'))


def test_intervals_fire_after_the_batch_that_crosses_them():
    max_duration = Time.parse('100ba')
    stamp, fired = Timestamp(), []
    for _ in range(12):
        nxt = stamp.after_batch(samples=8, tokens=1000)
        fired.append((crossed(stamp, nxt, Time.parse('5ba'), max_duration),
                      crossed(stamp, nxt, Time.parse('20sp'), max_duration),
                      crossed(stamp, nxt, Time.parse('2500tok'), max_duration),
                      crossed(stamp, nxt, Time.parse('0.04dur'), max_duration)))
        stamp = nxt
    assert [i + 1 for i, f in enumerate(fired) if f[0]] == [5, 10]
    assert [i + 1 for i, f in enumerate(fired) if f[1]] == [3, 5, 8, 10]  # 24, 40, 64, 80 samples
    assert [i + 1 for i, f in enumerate(fired) if f[2]] == [3, 5, 8, 10, 13][:4]
    assert [i + 1 for i, f in enumerate(fired) if f[3]] == [4, 8, 12]
    end_of_epoch = stamp.after_epoch()
    assert crossed(stamp, end_of_epoch, Time.parse('1ep'), max_duration)
    assert not crossed(stamp, end_of_epoch, Time.parse('5ba'), max_duration)
