"""Exact Hugging Face interop: export to native MPT / Llama / remote code, and import from HF folders.

`export_state_dict(model, state, out, ...)` writes a folder for any trained model (MPT through export_to_hf, any
other transformers model with save_pretrained semantics; a LoRA-adapted one merged, or as its adapter alone through
`export_adapter`). `load_model(path)` is the one call that loads any supported folder (ours, mosaicml's, native
MPT, Llama) as our MPTForCausalLM; MPTForCausalLM.from_pretrained itself reads only llm-foundry MPT folders.

The names below are imported on first use (PEP 562), so that `llmfoundry convert --help`, which imports
`llmfoundry.export.cli`, does not pay for torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOMES = {
    'choose_format': 'native', 'native_blockers': 'native', 'export_to_hf': 'to_hf', 'convert_from_hf': 'from_hf',
    'import_from_hf': 'from_hf', 'load_model': 'from_hf', 'source_kind': 'from_hf', 'export_state_dict': 'any_model',
    'export_adapter': 'adapter',
}

__all__ = [
    'choose_format', 'convert_from_hf', 'export_adapter', 'export_state_dict', 'export_to_hf', 'import_from_hf',
    'load_model', 'native_blockers', 'source_kind',
]

if TYPE_CHECKING:
    from .adapter import export_adapter
    from .any_model import export_state_dict
    from .from_hf import convert_from_hf, import_from_hf, load_model, source_kind
    from .native import choose_format, native_blockers
    from .to_hf import export_to_hf


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(importlib.import_module(f'.{_HOMES[name]}', __name__), name)
