"""convert_dataset_hf: any `datasets` source (hub name, folder, or json/parquet/text with data files).

Without groups each split is one dataset written in this process. With groups (--num-tasks, or --executor ray)
each split's streaming shards (its files) are cut into contiguous groups, converted as `groups.run_grouped`
does (restartable, one merged index per split).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from llmfoundry import storage
from llmfoundry.data.errors import DataError
from llmfoundry.data.prep.groups import Executor, GroupJob, run_grouped
from llmfoundry.data.prep.hf_streaming import load_streaming
from llmfoundry.data.prep.pipeline import ConvertSpec, write_documents
from llmfoundry.data.prep.progress import Stats

log = logging.getLogger(__name__)

TEXT_COLUMN = 'text'
_SPLIT_ALIASES = {'val': 'validation'}  # llm-foundry users write --splits train val


def load_splits(dataset: str, data_subset: str | None, data_files: dict[str, list[str]] | None):
    """The dataset's splits as a streaming IterableDatasetDict (nothing is cached to disk)."""
    import datasets

    try:
        return load_streaming(dataset, name=data_subset, data_files=data_files)
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


@dataclass(frozen=True)
class HFShardGroups:
    """Group g of n: the g-th contiguous block of the split's streaming shards (`IterableDataset.shard`)."""

    dataset: str
    data_subset: str | None
    data_files: dict[str, list[str]] | None
    split: str  # the dataset's own split name
    n_groups: int

    def documents(self, group: list[int]) -> Iterator[str]:
        (index,) = group
        split_data = load_splits(self.dataset, self.data_subset, self.data_files)[self.split]
        return hf_documents(split_data.shard(num_shards=self.n_groups, index=index, contiguous=True))

    def describe(self, group: list[int]) -> str:
        return f"dataset '{self.dataset}' split '{self.split}' shard group {group[0]} of {self.n_groups}"


def convert_hf_grouped(
    dataset: str, data_subset: str | None, splits: list[str], out_root: str, spec: ConvertSpec, n_groups: int,
    executor: Executor, data_files: dict[str, list[str]] | None = None, reprocess: bool = False,
) -> dict[str, tuple[Stats, int]]:  # fmt: skip
    """Each split to out_root/<split> in at most `n_groups` groups of its shards; {split: (stats, groups skipped)}."""
    storage.check_writable(out_root)
    loaded = load_splits(dataset, data_subset, data_files)
    results = {}
    for split in splits:
        name = resolve_split(list(loaded), split)
        n = max(1, min(n_groups, loaded[name].n_shards))
        source = HFShardGroups(dataset, data_subset, data_files, name, n)
        fingerprint = {'spec': asdict(spec), 'groups': n, 'source': asdict(source), 'n_shards': loaded[name].n_shards}
        job = GroupJob(
            f'convert_dataset_hf {split}',
            storage.join(out_root, split),
            spec,
            source,
            [[i] for i in range(n)],
            fingerprint,
        )
        results[split] = run_grouped(job, executor, reprocess)
    return results
