from __future__ import annotations

import io
import json

import pytest

from llmfoundry.config.time import Time, Timestamp
from llmfoundry.train.console import ConsoleLogger, format_value
from llmfoundry.train.jsonl import JSONLLogger


def at(batch: int, tokens_per_batch: int = 100) -> Timestamp:
    return Timestamp(batch=batch, sample=4 * batch, token=tokens_per_batch * batch)


def test_jsonl_one_flushed_object_per_event_appended_after_resume(tmp_path):
    path = tmp_path / 'run' / 'metrics.jsonl'
    first = JSONLLogger(path)
    first.log_metrics({'loss/train/total': 3.5, 'throughput/tokens_per_sec': 10}, at(1))
    assert path.read_text().count('\n') == 1  # flushed before close
    first.log_metrics({'loss/train/total': float('nan')}, at(2))
    first.close()
    resumed = JSONLLogger(path)
    resumed.log_metrics({'loss/train/total': 3.0}, at(2))
    resumed.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records == [
        {'batch': 1, 'tokens': 100, 'samples': 4, 'epoch': 0, 'loss/train/total': 3.5, 'throughput/tokens_per_sec': 10},
        {'batch': 2, 'tokens': 200, 'samples': 8, 'epoch': 0, 'loss/train/total': None},
        {'batch': 2, 'tokens': 200, 'samples': 8, 'epoch': 0, 'loss/train/total': 3.0},
    ]


def test_jsonl_creates_nothing_until_something_is_logged(tmp_path):
    JSONLLogger(tmp_path / 'metrics.jsonl').close()
    assert not (tmp_path / 'metrics.jsonl').exists()


def test_console_plain_lines_at_the_interval_and_every_eval(tmp_path):
    stream = io.StringIO()
    console = ConsoleLogger(interval='2ba', progress_bar=True, max_duration=Time.parse('100ba'), stream=stream)
    for batch in range(1, 5):
        console.log_metrics({'loss/train/total': 3.21}, at(batch))
        console.log_metrics({'lr-AdamW/group0': 6e-4}, at(batch))
    console.log_metrics({'metrics/eval/LanguageCrossEntropy': 3.0}, at(3))
    assert stream.getvalue().splitlines() == [
        '[batch 2/100] loss/train/total: 3.2100',
        '[batch 2/100] lr-AdamW/group0: 6.0000e-04',
        '[batch 4/100] loss/train/total: 3.2100',
        '[batch 4/100] lr-AdamW/group0: 6.0000e-04',
        '[batch 3/100] metrics/eval/LanguageCrossEntropy: 3.0000',
    ]


def test_console_token_interval_and_label():
    stream = io.StringIO()
    console = ConsoleLogger(interval='250tok', progress_bar=False, max_duration='1000tok', stream=stream)
    for batch in range(1, 6):
        console.log_metrics({'loss/train/total': 1.0}, at(batch))
    assert [line.split(']')[0] for line in stream.getvalue().splitlines()] == [
        '[batch 3, tok 300/1000', '[batch 5, tok 500/1000']


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_progress_bar_on_a_terminal():
    stream = FakeTerminal()
    console = ConsoleLogger(interval='1ba', progress_bar=True, max_duration='10ba', stream=stream)
    console.log_metrics({'loss/train/total': 2.5}, at(3))
    console.log_metrics({'metrics/eval/LanguagePerplexity': 12.0}, at(3))
    console.close()
    output = stream.getvalue()
    assert '3/10' in output and 'loss/train/total: 2.5000' in output
    assert '[batch 3/10] metrics/eval/LanguagePerplexity: 12.0000' in output


@pytest.mark.parametrize(('value', 'text'), [(3.21, '3.2100'), (0, '0'), (0.0, '0.0000'), (6e-4, '6.0000e-04'),
                                             (1.5e12, '1.5000e+12'), (float('nan'), 'nan'), (7, '7')])
def test_format_value(value, text):
    assert format_value(value) == text
