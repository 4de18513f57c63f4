"""A monolithic checkpoint written by Composer 0.32.1's own Trainer (llm-foundry 0.22.0's ComposerMPTCausalLM) loads
through the restricted unpickler, while a pickle that would run code is refused before it runs.

The fixture is tests/fixtures/llmfoundry/composer/ (scripts/make_llmfoundry_fixtures.sh): the .pt, expected.json
(shape, sum and first values of every weight as Composer saved it) and expected.safetensors (the trained model's
logits in fp32).
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.serialization import get_unsafe_globals_in_checkpoint

from llmfoundry.export.from_checkpoint import model_from_checkpoint
from llmfoundry.train.checkpoint import CheckpointError, composer

FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / 'llmfoundry' / 'composer'
CHECKPOINT = str(FIXTURE / 'ep0-ba2-rank0.pt')
# The training YAML's model section of the fixture run (the .pt alone does not say how to rebuild the model).
MODEL_YAML = """\
model:
  name: mpt_causal_lm
  d_model: 8
  n_heads: 2
  n_layers: 2
  expansion_ratio: 2
  max_seq_len: 16
  vocab_size: 32
  attn_config:
    attn_impl: torch
"""


def test_real_checkpoint_names_only_known_data_classes():
    found = set(get_unsafe_globals_in_checkpoint(CHECKPOINT))
    assert found == {'datetime.timedelta', 'numpy._core.multiarray._reconstruct', 'numpy.ndarray', 'numpy.dtype',
                     'torch.torch_version.TorchVersion'}
    assert found <= composer._SAFE_NAMES


def test_real_checkpoint_unpickles_with_its_data_intact():
    tree = composer.restricted_load(CHECKPOINT)
    timestamp = tree['state']['timestamp']['Timestamp']
    assert (timestamp['batch'], timestamp['sample'], timestamp['token']) == (2, 4, 40)
    assert isinstance(timestamp['total_wct'], datetime.timedelta)
    assert tree['state']['metadata']['composer_env_info']['composer_version'] == '0.32.1'
    assert isinstance(tree['rng'][0]['numpy'][1], np.ndarray)
    assert tree['state']['optimizers']['DecoupledAdamW']['state']  # Adam moments: tensors under parameter names


def test_real_checkpoint_weights_are_what_composer_saved():
    expected = json.loads((FIXTURE / 'expected.json').read_text())
    weights = composer.read_model_weights(CHECKPOINT)
    assert sorted(weights) == sorted(name.removeprefix('model.') for name in expected)
    for name, values in expected.items():
        tensor = weights[name.removeprefix('model.')]
        assert list(tensor.shape) == values['shape'], name
        assert tensor.flatten()[:4].tolist() == values['first'], name
        assert tensor.sum().item() == pytest.approx(values['sum'], abs=1e-5), name


def test_real_checkpoint_converts_with_composers_logits(tmp_path):
    (tmp_path / 'train.yaml').write_text(MODEL_YAML)
    model = model_from_checkpoint(CHECKPOINT, tmp_path / 'train.yaml')
    expected = load_file(FIXTURE / 'expected.safetensors')
    with torch.no_grad():
        logits = model(input_ids=expected['input_ids']).logits
    torch.testing.assert_close(logits, expected['logits'], atol=1e-5, rtol=1e-5)


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {shlex.quote(str(self.marker))}',))


@pytest.mark.parametrize('where', ['next to the weights', 'inside an allowed timedelta'])
def test_a_pickle_that_runs_code_is_refused_before_it_runs(tmp_path, where):
    marker = tmp_path / 'ran'
    payload = _RunsCode(marker)
    tree = composer.restricted_load(CHECKPOINT)
    if where == 'next to the weights':
        tree['state']['callbacks'] = payload
    else:  # a payload in the arguments of an allowed class is refused all the same
        tree['state']['timestamp']['Timestamp']['total_wct'] = _Wrapped(payload)
    path = tmp_path / 'evil.pt'
    torch.save(tree, path)
    with pytest.raises(CheckpointError, match=r'refusing to unpickle .*posix\.system'):
        composer.read_model_weights(str(path))
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the unrestricted loader runs it: the payload is live
    assert marker.exists()


class _Wrapped:
    def __init__(self, inner: object) -> None:
        self.inner = inner

    def __reduce__(self):
        return (datetime.timedelta, (self.inner,))
