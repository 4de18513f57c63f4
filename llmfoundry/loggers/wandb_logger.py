"""wandb: metrics and the resolved config to Weights & Biases (Composer's WandBLogger keys).

The W&B run starts at the first logging call, which only rank 0 makes, so a data-parallel job makes
one run. Its local files go under the run folder. Steps are batches completed, so curves line up with
metrics.jsonl. With `log_artifacts`, every checkpoint the run saves (handed over by the trainer through
`upload_file`) becomes a W&B artifact of type model.
WANDB_MODE=offline writes the run locally for a later `wandb sync`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePosixPath
from typing import Any

from llmfoundry.config.time import Timestamp
from llmfoundry.interfaces import LoggerDestination
from llmfoundry.storage import is_remote

from ._optional import import_extra

log = logging.getLogger(__name__)
# URL schemes W&B artifacts can store as references (other object stores are not uploaded)
WANDB_REFERENCE_SCHEMES = ('s3://', 'gs://', 'http://', 'https://')


class WandBLogger(LoggerDestination):
    def __init__(self, project: str | None = None, entity: str | None = None, name: str | None = None,
                 group: str | None = None, tags: list[str] | None = None, log_artifacts: bool = False,
                 init_kwargs: dict[str, Any] | None = None, *, run_folder: Path, default_name: str) -> None:
        self._wandb = import_extra('wandb', 'wandb', 'wandb')  # at build time: a missing extra fails at startup
        self.run_folder = Path(run_folder)
        self.log_artifacts = log_artifacts
        settings = {'project': project, 'entity': entity, 'name': name or default_name, 'group': group,
                    'tags': tags, 'dir': str(self.run_folder)}
        self.init_kwargs = {**(init_kwargs or {}), **{k: v for k, v in settings.items() if v is not None}}
        self._run = None

    @property
    def run(self):
        """The W&B run, started on first use."""
        if self._run is None:
            self.run_folder.mkdir(parents=True, exist_ok=True)
            self._run = self._wandb.init(**self.init_kwargs)
        return self._run

    def log_hyperparameters(self, config: dict[str, Any]) -> None:
        self.run.config.update(config, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], timestamp: Timestamp) -> None:
        self.run.log(dict(metrics), step=timestamp.batch)

    def upload_file(self, path: str, kind: str = 'model') -> None:
        """Store a checkpoint (a folder or file; an s3:// URL as a reference) as an artifact named after it; a no-op
        unless log_artifacts."""
        if not self.log_artifacts:
            return
        path = str(path)
        name = re.sub(r'[^A-Za-z0-9_.-]', '_', PurePosixPath(path.rstrip('/')).name)  # W&B's allowed characters
        artifact = self._wandb.Artifact(name=name, type=kind)
        if is_remote(path):  # remote storage: W&B records the URL and checksums instead of copying
            if not path.startswith(WANDB_REFERENCE_SCHEMES):
                log.warning('wandb log_artifacts: W&B cannot reference %s (it references %s); not uploaded.',
                            path, ', '.join(WANDB_REFERENCE_SCHEMES))
                return
            artifact.add_reference(path)
        elif Path(path).is_dir():
            artifact.add_dir(path)
        else:
            artifact.add_file(path)
        self.run.log_artifact(artifact)

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None
