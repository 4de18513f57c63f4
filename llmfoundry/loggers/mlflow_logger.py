"""mlflow: metrics and the resolved config to an MLflow tracking server (Composer's MLFlowLogger keys).

The tracking URI is `tracking_uri`, else MLFLOW_TRACKING_URI, else a SQLite database in the run folder
(MLflow's recommended local store; it needs the full `mlflow` package, not mlflow-skinny). The MLflow
run starts at the first logging call (rank 0 only). The config is flattened to dotted parameter names,
since MLflow parameters are flat strings.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmfoundry.config.time import Timestamp
from llmfoundry.interfaces import LoggerDestination

from ._optional import import_extra

_MAX_METRICS_PER_CALL = 1000  # MLflow's log_batch limits
_MAX_PARAMS_PER_CALL = 100
_MAX_PARAM_LENGTH = 6000
_INVALID_NAME = re.compile(r'[^\w\-. /:]')  # MLflow allows alphanumerics, _ - . space / and :


def flatten(config: dict[str, Any], prefix: str = '') -> Iterator[tuple[str, Any]]:
    for key, value in config.items():
        if isinstance(value, dict) and value:
            yield from flatten(value, f'{prefix}{key}.')
        else:
            yield f'{prefix}{key}', value


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class MLFlowLogger(LoggerDestination):
    def __init__(self, experiment_name: str | None = None, tracking_uri: str | None = None,
                 run_name: str | None = None, *, run_folder: Path, default_name: str) -> None:
        self._mlflow = import_extra('mlflow', 'mlflow', 'mlflow')
        self.experiment_name = experiment_name or 'llmfoundry'
        self.tracking_uri = (tracking_uri or os.environ.get('MLFLOW_TRACKING_URI')
                             or f'sqlite:///{(Path(run_folder) / "mlflow.db").resolve()}')
        self.run_folder = Path(run_folder)
        self.run_name = run_name or default_name
        self._client = None
        self.run_id: str | None = None

    def _start(self):
        if self._client is None:
            self.run_folder.mkdir(parents=True, exist_ok=True)
            client = self._mlflow.MlflowClient(tracking_uri=self.tracking_uri)
            experiment = client.get_experiment_by_name(self.experiment_name)
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(self.experiment_name)
            self.run_id = client.create_run(experiment_id, run_name=self.run_name).info.run_id
            self._client = client
        return self._client

    def log_hyperparameters(self, config: dict[str, Any]) -> None:
        client, entities = self._start(), self._mlflow.entities
        params = [entities.Param(_INVALID_NAME.sub('_', key), str(value)[:_MAX_PARAM_LENGTH])
                  for key, value in flatten(config)]
        for chunk in _chunks(params, _MAX_PARAMS_PER_CALL):
            client.log_batch(self.run_id, params=chunk)

    def log_metrics(self, metrics: dict[str, float], timestamp: Timestamp) -> None:
        client, entities = self._start(), self._mlflow.entities
        now_ms = int(time.time() * 1000)
        records = [entities.Metric(_INVALID_NAME.sub('_', name), float(value), now_ms, timestamp.batch)
                   for name, value in metrics.items()]
        for chunk in _chunks(records, _MAX_METRICS_PER_CALL):
            client.log_batch(self.run_id, metrics=chunk)

    def close(self) -> None:
        if self._client is not None:
            self._client.set_terminated(self.run_id)
            self._client = None
