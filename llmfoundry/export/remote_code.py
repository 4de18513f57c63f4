"""Self-contained remote-code folders: our modeling source, copied from the installed package at export time.

The folder loads with `trust_remote_code=True` where llmfoundry is not installed. Its config.json says
model_type 'llmfoundry_mpt', a type transformers does not know, so loading it without trust_remote_code
fails loudly instead of silently building transformers' own (different) MPT.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import llmfoundry.models.mpt as mpt_package
from llmfoundry.models.mpt import MPTConfig
from llmfoundry.models.mpt.configuration_mpt import REMOTE_MODEL_TYPE

ENTRY_FILES = ('configuration_mpt.py', 'modeling_mpt.py')
AUTO_MAP = {
    'AutoConfig': 'configuration_mpt.MPTConfig',
    'AutoModelForCausalLM': 'modeling_mpt.MPTForCausalLM',
}
# Written only when set: transformers 5's PretrainedConfig no longer knows them, so under 5.x our MPTConfig
# accepts them only once it declares them itself.
_TOKEN_KEYS = ('bos_token_id', 'eos_token_id', 'pad_token_id')
_MODEL_TYPE_LINE = "    model_type = 'mpt'\n"


def _relative_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding='utf-8'))
    return {f'{node.module}.py' for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module}


def source_files() -> list[Path]:
    """The package's modeling files that the entry files need, following their relative imports."""
    package_dir = Path(mpt_package.__file__).parent
    todo, seen = list(ENTRY_FILES), set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_relative_imports(package_dir / name))
    return [package_dir / name for name in sorted(seen)]


def _configuration_source(path: Path) -> str:
    text = path.read_text(encoding='utf-8')
    if text.count(_MODEL_TYPE_LINE) != 1:
        raise RuntimeError(f"{path}: expected exactly one line {_MODEL_TYPE_LINE.strip()!r} to rewrite.")
    return text.replace(_MODEL_TYPE_LINE, f"    model_type = '{REMOTE_MODEL_TYPE}'\n")


def remote_config_dict(config: MPTConfig) -> dict[str, Any]:
    """config.json contents for a remote-code folder.

    Only our model's own keys (and the token ids) are written: the generic PretrainedConfig keys differ
    between transformers versions (5.x dropped several of 4.x's), and MPTConfig rejects keys it does not know.
    """
    own = set(inspect.signature(MPTConfig.__init__).parameters) - {'self', 'kwargs'}
    own |= {'tokenizer_name'} | {key for key in _TOKEN_KEYS if getattr(config, key, None) is not None}
    out = {key: value for key, value in config.to_dict().items() if key in own}
    out.update(
        model_type=REMOTE_MODEL_TYPE,
        architectures=['MPTForCausalLM'],
        auto_map=dict(AUTO_MAP),
        init_device='cpu',  # the loader builds the model; a meta init_device would leave it empty
    )
    return out


def write_modeling_files(folder: Path) -> None:
    """Copy the modeling source into `folder`, with the configuration's model_type rewritten."""
    for path in source_files():
        text = _configuration_source(path) if path.name == 'configuration_mpt.py' else path.read_text('utf-8')
        (folder / path.name).write_text(text, encoding='utf-8')
