"""hf_checkpointer: write a Hugging Face folder of the model every `save_interval` and at the end of training.

Folders go to `{save_folder}/huggingface/{huggingface_folder_name}` (default `ba{batch}`), a local path or any
URL `llmfoundry.storage` supports, through `llmfoundry.export.export_state_dict` (any model it exports: MPT,
transformers models), with the run's tokenizer. Under FSDP every rank must take part in gathering the full
weights, so all ranks gather (to CPU, kept by rank 0 only) and rank 0 writes; its outcome is broadcast so that a
failed write stops every rank instead of leaving the others waiting.

A folder appears complete or not at all: locally the exporter builds it beside its target and renames it into
place; on object storage it is written to a local temporary folder (under TMPDIR) and published with
`storage.upload_folder`, config.json last.

llm-foundry's keys and defaults (precision float32, overwrite true). MLflow model registration is not built:
mlflow_registered_model_name is refused; mlflow_logging_config, final_register_only, register_wait_seconds and
flatten_imports only matter with it (or, for flatten_imports, are what our exporter always does) and warn once
when set to anything but their default.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from llmfoundry import storage
from llmfoundry.config.time import Time, Timestamp, crossed
from llmfoundry.config.validation import ConfigError
from llmfoundry.interfaces import Callback, MetricLogger, TrainState

log = logging.getLogger(__name__)

KEY = 'callbacks.hf_checkpointer'
PRECISIONS = ('float32', 'bfloat16', 'float16')
FOLDER_FIELDS = ('run_name', 'epoch', 'batch', 'sample', 'token')
# Keys of llm-foundry's callback that only serve MLflow registration, with their defaults.
REGISTRATION_DEFAULTS: dict[str, Any] = {
    'mlflow_logging_config': None, 'final_register_only': False, 'register_wait_seconds': 7200,
}


class HuggingFaceCheckpointer(Callback):
    def __init__(
        self, save_folder: str, save_interval: str | int, huggingface_folder_name: str = 'ba{batch}',
        precision: str = 'float32', overwrite: bool = True, mlflow_registered_model_name: str | None = None,
        mlflow_logging_config: dict | None = None, flatten_imports: Sequence[str] = ('llmfoundry',),
        final_register_only: bool = False, register_wait_seconds: int = 7200,
    ) -> None:  # fmt: skip
        if precision not in PRECISIONS:
            raise ConfigError(f'{KEY}.precision={precision!r} is invalid; allowed: {", ".join(PRECISIONS)}.')
        if mlflow_registered_model_name is not None:
            raise ConfigError(f'{KEY}.mlflow_registered_model_name={mlflow_registered_model_name!r}: registering '
                              'models in MLflow is not supported; remove the key and register the saved folder '
                              'with mlflow yourself.')
        _warn_unused({'mlflow_logging_config': mlflow_logging_config, 'final_register_only': final_register_only,
                      'register_wait_seconds': register_wait_seconds})
        if tuple(flatten_imports) != ('llmfoundry',):
            warnings.warn(f'{KEY}.flatten_imports has no effect: exported model code never imports llmfoundry.',
                          stacklevel=2)
        _check_folder_name(huggingface_folder_name)
        self.save_folder = save_folder
        self.folder_name = huggingface_folder_name
        self.interval = Time.parse(save_interval, f'{KEY}.save_interval')
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

    def folder(self, state: TrainState) -> str:
        """Where this timestamp's folder goes: a local path or a URL."""
        root = self.save_folder.replace('{run_name}', state.run_name)
        name = self.folder_name.format(run_name=state.run_name, **_time_fields(state.timestamp))
        return storage.join(root, 'huggingface', name)

    def save(self, state: TrainState) -> None:
        """Every rank calls this; rank 0 writes the folder (once per timestamp)."""
        if self._last_saved == state.timestamp or state.diverged:  # no export of diverged weights
            return
        full = get_model_state_dict(state.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        error = None
        if state.dist.is_main:
            try:
                self._write(self.folder(state), state.model, full, state.tokenizer)
            except Exception as err:  # noqa: BLE001 - every rank must learn of it, or the others wait forever
                error = f'{type(err).__name__}: {err}'
        outcome = [error]
        if state.dist.world_size > 1:
            dist.broadcast_object_list(outcome, src=0)
        if outcome[0] is not None:
            raise RuntimeError(f'hf_checkpointer: writing {self.folder(state)} failed: {outcome[0]}')
        self._last_saved = state.timestamp

    def _write(self, out: str | os.PathLike[str], model: torch.nn.Module, full: dict[str, torch.Tensor],
               tokenizer) -> None:
        from llmfoundry.export import export_state_dict  # pulls in the HF model classes; only rank 0 needs them

        out = os.fspath(out)
        if not self.overwrite and not storage.is_empty(out):
            raise FileExistsError(f'{out} exists; set overwrite: true to replace it.')
        if not storage.is_remote(out):  # the exporter writes atomically; overwrite swaps the folder in one rename
            export_state_dict(model, full, Path(out), dtype=self.precision, tokenizer=tokenizer,
                              overwrite=self.overwrite)
        else:
            with tempfile.TemporaryDirectory(prefix='llmfoundry-hf-') as tmp:
                local = Path(tmp) / 'model'
                export_state_dict(model, full, local, dtype=self.precision, tokenizer=tokenizer, overwrite=False)
                storage.upload_folder(local, out, replace=self.overwrite)
        log.info('hf_checkpointer: wrote %s', out)


def _time_fields(timestamp: Timestamp) -> dict[str, int]:
    return {'epoch': timestamp.epoch, 'batch': timestamp.batch, 'sample': timestamp.sample, 'token': timestamp.token}


def _check_folder_name(name: str) -> None:
    """huggingface_folder_name may use only {run_name}, {epoch}, {batch}, {sample}, {token}."""
    try:
        name.format(**dict.fromkeys(FOLDER_FIELDS, 0))
    except (KeyError, IndexError, ValueError) as err:
        fields = ', '.join(f'{{{field}}}' for field in FOLDER_FIELDS)
        raise ConfigError(f'{KEY}.huggingface_folder_name={name!r}: {err!r}; it may use {fields}.') from err


def _warn_unused(values: dict[str, Any]) -> None:
    """One warning for the registration-only keys set to anything but llm-foundry's default."""
    changed = sorted(key for key, value in values.items() if value != REGISTRATION_DEFAULTS[key])
    if changed:
        warnings.warn(f'{KEY}: {", ".join(changed)} only apply to MLflow model registration, which is not '
                      'supported; they have no effect.', stacklevel=3)
