"""A run whose early_stopper gives up ends like any stop request: at the judged batch, checkpointed, exit 0.

The MDS shards (`mds_dir`) come from tests/train/conftest.py.
"""

from __future__ import annotations

from test_divergence import batches_logged, logged
from test_train_e2e import MPT_SIZE, TINY_YAML, overrides

from llmfoundry.train.entry import main as train


def test_the_run_stops_at_the_evaluation_that_exceeds_the_patience(mds_dir, tokenizer_dir, tmp_path, caplog):
    folder = tmp_path / 'run'
    # nothing improves by 100 nats: the best stays batch 1's, and batch 4's evaluation is 3 batches past it
    stopper = '{monitor: LanguageCrossEntropy, dataloader_label: eval, patience: 2ba, min_delta: 100}'
    assert train([str(TINY_YAML), *overrides(mds_dir, tokenizer_dir, folder, *MPT_SIZE, 'eval_interval=1ba',
                                             f'callbacks={{early_stopper: {stopper}}}')]) == 0
    assert batches_logged(folder) == [1, 2, 3, 4]
    assert [batch for batch, _ in logged(folder, 'metrics/eval/LanguageCrossEntropy')] == [1, 2, 3, 4]
    assert (folder / 'latest').read_text().strip() == 'ep0-ba4'
    assert 'early_stopper: metrics/eval/LanguageCrossEntropy has not improved on its best' in caplog.text
