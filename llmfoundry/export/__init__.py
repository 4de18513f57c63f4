"""Exact Hugging Face interop: export to native MPT / Llama / remote code, and import from HF folders."""

from .from_hf import convert_from_hf, import_from_hf, load_foreign_folder, source_kind
from .native import choose_format, native_blockers
from .to_hf import export_to_hf

__all__ = [
    'choose_format', 'convert_from_hf', 'export_to_hf', 'import_from_hf', 'load_foreign_folder', 'native_blockers',
    'source_kind',
]
