"""The JSONL metrics file every run writes (`<run folder>/metrics.jsonl`): the record tools can read without W&B.

One JSON object per logging event: `batch` (batches completed), `tokens` (global tokens seen),
`samples`, `epoch`, then the metrics logged at that event. The file is opened for appending, so a
resumed run continues it; batches replayed after a resume appear again and readers keep the last
entry per batch. Every line is flushed, so a crashed run keeps everything logged before the crash.
Non-finite values are written as null: NaN and Infinity are not JSON, and strict readers reject them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import IO, Any

from llmfoundry.config.time import Timestamp
from llmfoundry.interfaces import LoggerDestination


def _json_value(value: Any) -> Any:
    value = value.item() if hasattr(value, 'item') else value  # tensors and numpy scalars
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JSONLLogger(LoggerDestination):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file: IO[str] | None = None  # opened on first use: only rank 0 ever logs

    def log_metrics(self, metrics: dict[str, float], timestamp: Timestamp) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open('a', encoding='utf-8')
        record = {'batch': timestamp.batch, 'tokens': timestamp.token, 'samples': timestamp.sample,
                  'epoch': timestamp.epoch}
        record.update({name: _json_value(value) for name, value in metrics.items()})
        self._file.write(json.dumps(record, allow_nan=False) + '\n')
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
