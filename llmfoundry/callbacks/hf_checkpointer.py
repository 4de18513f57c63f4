"""hf_checkpointer: write a Hugging Face folder of the model every `save_interval` and at the end of training.

Folders go to `{save_folder}/huggingface/ba{batch}` through llmfoundry's exporter (native MPT / Llama or remote
code), with the run's tokenizer. Under FSDP every rank must take part in gathering the full weights, so all
ranks gather (to CPU, kept by rank 0 only) and rank 0 writes; its outcome is broadcast so that a failed write
stops every rank instead of leaving the others waiting. A folder appears complete or not at all.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from llmfoundry.config.time import Time, Timestamp, crossed
from llmfoundry.config.validation import ConfigError
from llmfoundry.interfaces import Callback, MetricLogger, TrainState
from llmfoundry.models.mpt import MPTForCausalLM

log = logging.getLogger(__name__)

PRECISIONS = ('float32', 'bfloat16')


class HuggingFaceCheckpointer(Callback):
    def __init__(self, save_folder: str, save_interval: str | int, precision: str = 'bfloat16',
                 overwrite: bool = False) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f'callbacks.hf_checkpointer.precision={precision!r} is invalid; '
                              f'allowed: {", ".join(PRECISIONS)}.')
        self.save_folder = save_folder
        self.interval = Time.parse(save_interval, 'callbacks.hf_checkpointer.save_interval')
        self.precision = precision
        self.overwrite = overwrite
        self._previous = Timestamp()  # the timestamp at the last check, to detect interval crossings
        self._last_saved: Timestamp | None = None

    def fit_start(self, state: TrainState, logger: MetricLogger) -> None:
        self._previous = state.timestamp  # a resumed run only counts crossings from where it resumed

    def batch_end(self, state: TrainState, logger: MetricLogger) -> None:
        self._check(state)

    def epoch_end(self, state: TrainState, logger: MetricLogger) -> None:
        self._check(state)

    def fit_end(self, state: TrainState, logger: MetricLogger) -> None:
        self.save(state)

    def _check(self, state: TrainState) -> None:
        if crossed(self._previous, state.timestamp, self.interval, state.max_duration):
            self.save(state)
        self._previous = state.timestamp

    def folder(self, state: TrainState) -> Path:
        root = Path(self.save_folder.replace('{run_name}', state.run_name))
        return root / 'huggingface' / f'ba{state.timestamp.batch}'

    def save(self, state: TrainState) -> None:
        """Every rank calls this; rank 0 writes the folder (once per timestamp)."""
        if self._last_saved == state.timestamp or state.diverged:  # no export of diverged weights
            return
        model = state.model
        if not isinstance(model, MPTForCausalLM):
            raise ConfigError(f'callbacks.hf_checkpointer exports llmfoundry MPT models; got {type(model).__name__}.')
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        error = None
        if state.dist.is_main:
            try:
                self._write(self.folder(state), model, full, state.tokenizer)
            except Exception as err:  # noqa: BLE001 - every rank must learn of it, or the others wait forever
                error = f'{type(err).__name__}: {err}'
        outcome = [error]
        if state.dist.world_size > 1:
            dist.broadcast_object_list(outcome, src=0)
        if outcome[0] is not None:
            raise RuntimeError(f'hf_checkpointer: writing {self.folder(state)} failed: {outcome[0]}')
        self._last_saved = state.timestamp

    def _write(self, out: Path, model: MPTForCausalLM, full: dict[str, torch.Tensor], tokenizer) -> None:
        from llmfoundry.export import export_to_hf  # the exporter pulls in the HF model classes; only rank 0 needs them

        if out.exists() and not self.overwrite:
            raise FileExistsError(f'{out} exists; set overwrite: true to replace it.')
        config = copy.deepcopy(model.config)
        config.init_device = 'meta'  # weights come from `full`; nothing to allocate or initialise
        with torch.device('meta'):
            clone = MPTForCausalLM(config)
        clone.load_state_dict(full, assign=True)
        clone.config.init_device = 'cpu'
        # export_to_hf writes atomically; with overwrite, an existing folder is swapped out in one rename.
        export_to_hf(clone, out, dtype=self.precision, tokenizer=tokenizer, overwrite=self.overwrite)
        log.info('hf_checkpointer: wrote %s', out)
