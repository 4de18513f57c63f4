"""docs/CONFIG_REFERENCE.md matches the schema: a schema change without a regenerated reference fails here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / 'scripts' / 'gen_config_reference.py'


def load_generator():
    spec = importlib.util.spec_from_file_location('gen_config_reference', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_config_reference_is_fresh():
    generator = load_generator()
    committed = generator.OUTPUT.read_text(encoding='utf-8') if generator.OUTPUT.exists() else ''
    assert committed == generator.render(), (
        f'{generator.OUTPUT.relative_to(REPO)} is stale: run `python scripts/gen_config_reference.py` and commit it.')


def test_reference_lists_every_schema_key():
    from dataclasses import fields

    from llmfoundry.config.schema import FSDPConfig, TrainConfig

    text = load_generator().render()
    for cls in (TrainConfig, FSDPConfig):
        for field in fields(cls):
            assert f'| `{field.name}` |' in text, field.name
    assert '| `attn_impl` | `str` | `\'flash\'` |' in text
