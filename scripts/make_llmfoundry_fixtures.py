"""Write tests/fixtures/llmfoundry/ with MosaicML's own llm-foundry 0.22.0 and Composer 0.32.1.

Run only through scripts/make_llmfoundry_fixtures.sh, in the side venv `.venv-llmfoundry`, from outside the
repository (so that `import llmfoundry` finds MosaicML's package, not ours):
    make_llmfoundry_fixtures.py OUT_DIR

It writes, in fp32 on CPU:
- mpt_<variant>/: a tiny MPT saved by llm-foundry's MPTForCausalLM.save_pretrained, registered for the auto
  classes as llm-foundry's HuggingFaceCheckpointer does (so config.json is exactly what an llm-foundry HF export
  writes; the copied llm-foundry source files are removed), plus expected.safetensors: INPUT_IDS and
  llm-foundry's logits on them;
- config_to_dict.json: a whole MPTConfig.to_dict() (save_pretrained omits keys left at transformers' defaults);
- composer/ep0-ba2-rank0.pt: a monolithic checkpoint written by Composer's Trainer after 2 batches of
  llm-foundry's ComposerMPTCausalLM (DecoupledAdamW), composer/expected.json: the sum and first values of every
  weight, and composer/expected.safetensors: the trained model's logits on INPUT_IDS;

The main test suite only reads these files; it never needs this venv.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import shutil
import sys
import types
from pathlib import Path
from typing import Any

INPUT_IDS = [[3, 17, 5, 29, 11, 0, 23, 8, 30, 2], [1, 1, 4, 9, 16, 25, 6, 19, 12, 31]]
TINY: dict[str, Any] = {
    'd_model': 8, 'n_heads': 2, 'n_layers': 2, 'expansion_ratio': 2, 'max_seq_len': 16, 'vocab_size': 32,
    'init_device': 'cpu',
}  # fmt: skip
# Bias switches x a few attention layouts, so that each switch meets fused and split q/k/v and another position
# scheme. attention_bias None means "follow no_bias"; upstream resolves it when the config is built.
VARIANTS: dict[str, dict[str, Any]] = {
    'bias_default': {'no_bias': False, 'attention_bias': None, 'attn': {}},
    'bias_attn_off': {'no_bias': False, 'attention_bias': False, 'attn': {'alibi': True}},
    'bias_attn_on': {'no_bias': False, 'attention_bias': True,
                     'attn': {'attn_type': 'grouped_query_attention', 'kv_n_heads': 1}},
    'nobias_default': {'no_bias': True, 'attention_bias': None, 'attn': {'alibi': True}},
    'nobias_attn_off': {'no_bias': True, 'attention_bias': False, 'attn': {'fused_qkv': False}},
    'nobias_attn_on': {'no_bias': True, 'attention_bias': True,
                       'attn': {'fused_qkv': False, 'rope': True, 'rope_impl': 'hf'}},
}


class _EmptyModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Stands in for `mcli` (MosaicML's platform client), which composer.loggers imports at import time only.

    Installing it would pull dozens of packages; nothing here talks to the MosaicML platform. Consulted only after
    every real finder failed, so an installed package always wins.
    """

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name.split('.')[0] == 'mcli':
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(spec.name)
        module.__getattr__ = lambda attr: type(attr, (Exception,), {})  # any name mcli would export
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        module.__path__ = []


sys.meta_path.append(_EmptyModules())

import torch  # noqa: E402, I001 - this llmfoundry is MosaicML's (see the docstring), not first-party
from composer import Trainer  # noqa: E402
from composer.optim import DecoupledAdamW  # noqa: E402
from llmfoundry.models.mpt import ComposerMPTCausalLM, MPTConfig, MPTForCausalLM  # noqa: E402
from safetensors.torch import save_file  # noqa: E402


def _attn_config(extra: dict[str, Any]) -> dict[str, Any]:
    return {'attn_impl': 'torch', **extra}


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Noise on every parameter: llm-foundry initialises biases and norms to constants, which would hide a bias
    (or norm weight) that a loader drops or misplaces."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=generator))


def write_variant(out: Path, name: str, spec: dict[str, Any], seed: int) -> None:
    torch.manual_seed(seed)
    config = MPTConfig(**TINY, no_bias=spec['no_bias'], attention_bias=spec['attention_bias'],
                       attn_config=_attn_config(spec['attn']))
    model = MPTForCausalLM(config).eval()
    _perturb(model, seed)
    # What llm-foundry's HuggingFaceCheckpointer does before save_pretrained: config.json gains auto_map.
    MPTConfig.register_for_auto_class()
    MPTForCausalLM.register_for_auto_class('AutoModelForCausalLM')
    folder = out / f'mpt_{name}'
    model.save_pretrained(folder, safe_serialization=True)
    for source in folder.glob('*.py'):  # llm-foundry's own modeling source: not ours to ship
        source.unlink()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(INPUT_IDS)).logits
    save_file({'input_ids': torch.tensor(INPUT_IDS), 'logits': logits.contiguous()}, folder / 'expected.safetensors')


class _Batches(torch.utils.data.Dataset):
    def __init__(self, rows: list[list[int]]) -> None:
        self.rows = torch.tensor(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {'input_ids': self.rows[index], 'labels': self.rows[index]}


def write_composer(out: Path, seed: int) -> None:
    torch.manual_seed(seed)
    model = ComposerMPTCausalLM(**TINY, attn_config=_attn_config({}), use_train_metrics=False,
                                loss_fn='torch_crossentropy')
    loader = torch.utils.data.DataLoader(_Batches(INPUT_IDS * 2), batch_size=2)
    optimizer = DecoupledAdamW(model.parameters(), lr=1e-2)  # llm-foundry's default: its state holds tensors
    folder = out / 'composer'
    # A relative save_folder: the checkpoint records its own path, which should not name this machine's folders.
    os.chdir(out)
    trainer = Trainer(model=model, train_dataloader=loader, optimizers=optimizer, max_duration='2ba',
                      save_folder='composer', save_interval='2ba', save_overwrite=True, device='cpu', seed=seed,
                      progress_bar=False, log_to_console=False, loggers=[])
    trainer.fit()
    trainer.close()
    for link in folder.iterdir():  # Composer adds a 'latest-rank0.pt' symlink; keep the real file only
        if link.is_symlink():
            link.unlink()
    with torch.no_grad():
        logits = model.model.eval()(input_ids=torch.tensor(INPUT_IDS)).logits
    save_file({'input_ids': torch.tensor(INPUT_IDS), 'logits': logits.contiguous()}, folder / 'expected.safetensors')
    weights = {name: tensor.detach().float() for name, tensor in model.state_dict().items()}
    expected = {name: {'shape': list(t.shape), 'sum': float(t.sum()), 'first': t.flatten()[:4].tolist()}
                for name, t in weights.items()}
    (folder / 'expected.json').write_text(json.dumps(expected, indent=1, sort_keys=True) + '\n')


def main(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    # Composer first: the variants register MPTConfig for the auto classes, which would leak into its config copy.
    write_composer(out, seed=len(VARIANTS))
    for seed, (name, spec) in enumerate(VARIANTS.items()):
        write_variant(out, name, spec, seed)
    # save_pretrained writes only the keys that differ from PretrainedConfig's defaults; this is every key.
    full = MPTConfig(**TINY, attn_config=_attn_config({}))
    full.to_json_file(out / 'config_to_dict.json', use_diff=False)


if __name__ == '__main__':
    main(Path(sys.argv[1]).resolve())
