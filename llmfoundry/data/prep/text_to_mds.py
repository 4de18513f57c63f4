"""convert_text_to_mds: a folder (or object-storage prefix) of .txt files, one document each -> MDS in groups.

The sorted file list is cut into contiguous groups (--processes locally, --num-tasks on Ray), converted and
merged by `groups.run_grouped`: restartable, and the same grouping always gives the same bytes.
"""

from __future__ import annotations

import os

from llmfoundry import storage
from llmfoundry.data.documents import list_input_files
from llmfoundry.data.errors import DataError
from llmfoundry.data.prep.groups import Executor, GroupJob, TextFiles, files_fingerprint, plan_groups, run_grouped
from llmfoundry.data.prep.local_executor import LocalExecutor
from llmfoundry.data.prep.pipeline import ConvertSpec
from llmfoundry.data.prep.progress import Stats

TEXT_SUFFIX = '.txt'


def convert_text_to_mds(
    input_folder: str, output_folder: str, spec: ConvertSpec, n_groups: int, reprocess: bool = False,
    executor: Executor | None = None,
) -> tuple[Stats, int]:  # fmt: skip
    """Run (or resume) the conversion in `n_groups` groups (default executor: `n_groups` local processes);
    returns (stats of the work done now, number of groups skipped)."""
    if not storage.is_remote(input_folder) and os.path.isfile(input_folder):
        raise DataError(f"--input_folder '{input_folder}' is a file, not a folder")
    sizes = list_input_files(input_folder, (TEXT_SUFFIX,))
    if not sizes:
        raise DataError(f"--input_folder '{input_folder}' holds no {TEXT_SUFFIX} files")
    storage.check_writable(output_folder)
    groups = plan_groups(list(sizes), n_groups)
    fingerprint = files_fingerprint(input_folder, sizes, spec, len(groups))
    job = GroupJob('convert_text_to_mds', output_folder, spec, TextFiles(), groups, fingerprint)
    return run_grouped(job, executor or LocalExecutor(n_groups), reprocess)
