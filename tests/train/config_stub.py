"""A TrainConfig with every required section present but empty, for tests of config-driven parts."""

from __future__ import annotations

from typing import Any

from llmfoundry.config.schema import TrainConfig
from llmfoundry.config.validation import from_dict


def stub_train_config(**keys: Any) -> TrainConfig:
    """Required sections empty, one batch of one sequence of 32 tokens; `keys` override or add."""
    raw = dict(model={}, tokenizer={}, optimizer={}, scheduler={}, train_loader={}, max_duration='1ba',
               max_seq_len=32, global_train_batch_size=1)
    return from_dict(TrainConfig, {**raw, **keys})
