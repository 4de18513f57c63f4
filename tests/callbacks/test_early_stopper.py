"""early_stopper (Composer's keys): stops once the monitored evaluation metric's best is older than `patience`."""

from __future__ import annotations

import pytest
from callback_state import finish_batch, make_state

from llmfoundry.callbacks.early_stopper import EarlyStopper
from llmfoundry.config.validation import ConfigError
from llmfoundry.registry import callbacks


def evaluate_each_batch(stopper: EarlyStopper, state, logger, values: list[float], name: str) -> int | None:
    """Feed one evaluation per batch; the batch at which a stop was requested, or None."""
    for value in values:
        finish_batch(state)
        stopper.eval_end(state, logger, {name: value, 'metrics/eval/Other': 0.0})
        if state.stop_reason:
            return state.timestamp.batch
    return None


def test_a_loss_stops_once_its_best_is_older_than_the_patience(tmp_path, logger):
    state = make_state(tmp_path, max_duration='20ba')
    stopper = callbacks.build('early_stopper', {'monitor': 'LanguageCrossEntropy', 'dataloader_label': 'eval',
                                                'patience': '2ba', 'min_delta': 0.1}, 'callbacks.early_stopper')
    # best 2.0 at batch 2; 1.95 is within min_delta, so no improvement; batch 5 is 3 batches past the best
    stopped = evaluate_each_batch(stopper, state, logger, [3.0, 2.0, 1.95, 2.5, 2.0, 1.0],
                                  'metrics/eval/LanguageCrossEntropy')
    assert stopped == 5
    assert state.stop_reason == ('early_stopper: metrics/eval/LanguageCrossEntropy has not improved on its best, 2 '
                                 'at batch 2, for 3ba (patience 2ba).')
    assert not state.diverged  # a normal stop: final checkpoint, exit 0


def test_higher_is_better_for_accuracy_and_comp_overrides_the_direction(tmp_path, logger):
    name = 'metrics/hellaswag/InContextLearningMultipleChoiceAccuracy'
    def accuracy() -> EarlyStopper:
        return EarlyStopper('InContextLearningMultipleChoiceAccuracy', 'hellaswag', patience='1ba')

    assert evaluate_each_batch(accuracy(), make_state(tmp_path), logger, [0.2, 0.3, 0.4, 0.5], name) is None
    assert evaluate_each_batch(accuracy(), make_state(tmp_path), logger, [0.5, 0.4, 0.3], name) == 3

    lower = EarlyStopper('InContextLearningMultipleChoiceAccuracy', 'hellaswag', comp='lt', patience='1ba')
    assert evaluate_each_batch(lower, make_state(tmp_path), logger, [0.5, 0.4, 0.3], name) is None


def test_labelled_eval_loaders_and_epoch_patience(tmp_path, logger):
    stopper = EarlyStopper('LanguagePerplexity', 'c4', patience=1)  # an integer counts epochs, as in Composer
    state = make_state(tmp_path, max_duration='5ep')
    name = 'metrics/eval/c4/LanguagePerplexity'
    stopper.eval_end(state, logger, {name: 10.0})
    for epoch in range(2):
        finish_batch(state)
        state.timestamp = state.timestamp.after_epoch()
        stopper.eval_end(state, logger, {name: 11.0})
        assert (state.stop_reason is not None) is (epoch == 1)


def test_a_metric_the_evaluation_does_not_log_is_named_with_what_it_does(tmp_path, logger):
    stopper = EarlyStopper('LanguageCrossEntropy', 'val')
    with pytest.raises(ValueError, match=r'logged none of metrics/val/LanguageCrossEntropy, '
                                         r'metrics/eval/val/LanguageCrossEntropy; set monitor and dataloader_label '
                                         r'to one of: metrics/eval/LanguageCrossEntropy\.'):
        stopper.eval_end(make_state(tmp_path), logger, {'metrics/eval/LanguageCrossEntropy': 1.0})


@pytest.mark.parametrize(('kwargs', 'error', 'message'), [
    ({'dataloader_label': 'train'}, ValueError, 'dataloader_label: train is not supported'),
    ({'comp': 'smaller'}, ValueError, "early_stopper.comp='smaller' is not one of lt, le, gt, ge"),
    ({'patience': '3 batches'}, ConfigError, "early_stopper.patience='3 batches' is not a time string"),
    ({'patience': -1}, ValueError, 'early_stopper.patience=-1 must be >= 0'),
])
def test_bad_settings_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        EarlyStopper(**{'monitor': 'LanguageCrossEntropy', 'dataloader_label': 'eval', **kwargs})
