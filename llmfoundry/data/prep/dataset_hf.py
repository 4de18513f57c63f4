"""convert_dataset_hf: any `datasets` source (hub name, folder, or json/parquet/text with data files)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from llmfoundry import storage
from llmfoundry.data.errors import DataError
from llmfoundry.data.prep.pipeline import ConvertSpec, write_documents
from llmfoundry.data.prep.progress import Stats

log = logging.getLogger(__name__)

TEXT_COLUMN = 'text'
_SPLIT_ALIASES = {'val': 'validation'}  # llm-foundry users write --splits train val


def load_splits(dataset: str, data_subset: str | None, data_files: dict[str, list[str]] | None):
    """The dataset's splits as a streaming IterableDatasetDict (nothing is cached to disk)."""
    import datasets

    try:
        return datasets.load_dataset(dataset, name=data_subset, data_files=data_files, streaming=True)
    except (OSError, ValueError, FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as err:
        raise DataError(f"could not load dataset '{dataset}': {err}") from err


def resolve_split(available: list[str], split: str) -> str:
    if split in available:
        return split
    alias = _SPLIT_ALIASES.get(split)
    if alias in available:
        log.info("split '%s' read from the dataset's '%s' split", split, alias)
        return alias
    raise DataError(f"split '{split}' not in the dataset; it has {sorted(available)}")


def hf_documents(split_data) -> Iterator[str]:
    for record in split_data:
        text = record.get(TEXT_COLUMN)
        if not isinstance(text, str):
            raise DataError(f"expected a string column '{TEXT_COLUMN}', got columns {sorted(record)}")
        yield text


def convert_hf(
    dataset: str,
    data_subset: str | None,
    splits: list[str],
    out_root: str,
    spec: ConvertSpec,
    num_workers: int = 0,
    data_files: dict[str, list[str]] | None = None,
    report: Callable[[str, Stats], None] = lambda split, stats: None,
) -> dict[str, Stats]:
    """Each split goes to out_root/<split>; every requested split must be new there."""
    taken = [s for s in splits if not storage.is_empty(storage.join(out_root, s))]
    if taken:
        raise DataError(f"--out_root '{out_root}' already holds split(s) {taken}; remove them or choose another")
    storage.check_writable(out_root)
    loaded = load_splits(dataset, data_subset, data_files)
    sources = {split: loaded[resolve_split(list(loaded), split)] for split in splits}
    results = {}
    for split, split_data in sources.items():
        results[split] = write_documents(
            hf_documents(split_data), storage.join(out_root, split), spec, num_workers,
            report=lambda stats, split=split: report(split, stats),
        )  # fmt: skip
    return results
