"""Benchmark (not a test): finetuning tokens/s of the chat twin with and without packing, and the padding each way.

The twin (yamls/finetune/mpt-tiny-chat-cpu.yaml: its model, loader and shipped conversations) trains in this process
for --batches batches per mode, after --warmup batches, with a tokenizer trained on the Python standard library in a
scratch folder. Rows: packing_ratio null (one conversation per row) and the YAML's packing_ratio (auto: picked on a
profile of the data). tokens/s counts real tokens, padding excluded, so the modes compare the work they get done;
padding is the fraction of each row's positions that hold no token; ratio is the packing ratio used (picked, for auto)
and examples/row what the rows actually held.

    python scripts/benchmarks/finetune_packing.py [--batches 30] [--warmup 3]
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from llmfoundry.data.finetuning.loader import build_finetuning_dataloader
from llmfoundry.data.tokenizers import build_tokenizer
from llmfoundry.models.builders import build_model

REPO = Path(__file__).resolve().parents[2]
CHAT_YAML = REPO / 'yamls' / 'finetune' / 'mpt-tiny-chat-cpu.yaml'


def train_tokenizer(work: Path) -> Path:
    corpus, out = work / 'corpus', work / 'tokenizer'
    corpus.mkdir()
    for path in sorted(Path(sysconfig.get_paths()['stdlib']).glob('*.py'))[:150]:
        (corpus / f'{path.stem}.txt').write_text(path.read_text(encoding='utf-8'), encoding='utf-8')
    subprocess.run([sys.executable, '-m', 'llmfoundry.cli', 'tokenizer', 'train', '--input', str(corpus),
                    '--vocab-size', '4096', '--out', str(out)], check=True, stdout=subprocess.DEVNULL)
    return out


def measure(config: dict[str, Any], packing: Any, tokenizer: Any, batches: int, warmup: int) -> dict[str, float]:
    """Train a fresh twin model for warmup + batches batches; tokens/s and padding over the timed ones."""
    loader_cfg = {**config['train_loader'], 'dataset': {**config['train_loader']['dataset'], 'packing_ratio': packing}}
    device_batch = config['device_train_microbatch_size']
    loader = build_finetuning_dataloader(loader_cfg, tokenizer, device_batch)
    torch.manual_seed(0)
    model = build_model(dict(config['model'])).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config['optimizer']['lr'])
    stream = itertools.chain.from_iterable(itertools.repeat(loader))  # epochs back to back
    tokens = positions = 0
    examples = 0.0
    for step in range(warmup + batches):
        batch = next(stream)
        if step == warmup:
            start = time.perf_counter()
        loss = model(input_ids=batch['input_ids'], attention_mask=batch['attention_mask'],
                     sequence_id=batch['sequence_id'], labels=batch['labels']).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= warmup:
            tokens += int(batch['attention_mask'].sum())
            positions += batch['attention_mask'].numel()
            examples += float(batch['sequence_id'].max(dim=1).values.add(1).sum())
    seconds = time.perf_counter() - start
    return {'ratio': loader.batch_size / device_batch, 'tokens/s': tokens / seconds, 'padding': 1 - tokens / positions,
            'examples/row': examples / batches / device_batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batches', type=int, default=30)
    parser.add_argument('--warmup', type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
    config = OmegaConf.to_container(OmegaConf.load(CHAT_YAML), resolve=False)
    config['variables']['data_dir'] = str(REPO / 'yamls' / 'finetune' / 'data' / 'chat')
    with tempfile.TemporaryDirectory(prefix='finetune-packing-') as scratch:
        config['variables']['tokenizer'] = str(train_tokenizer(Path(scratch)))
        config = OmegaConf.to_container(OmegaConf.create(config), resolve=True)
        tokenizer = build_tokenizer(config['tokenizer']['name'], config['tokenizer'].get('kwargs'))
        packed = config['train_loader']['dataset']['packing_ratio']
        results = {mode: measure(config, ratio, tokenizer, args.batches, args.warmup)
                   for mode, ratio in (('unpacked', None), (f'packing {packed}', packed))}
    cpu = platform.processor() or platform.machine()
    print(f'\nmachine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads')
    print(f"config: {CHAT_YAML.relative_to(REPO)} (d_model {config['model']['d_model']}, "
          f"{config['model']['n_layers']} layers, max_seq_len {config['max_seq_len']}, "
          f"{config['device_train_microbatch_size']} rows per batch, fp32), {args.batches} timed batches\n")
    print(f"{'mode':<18} | {'ratio':>5} | {'examples/row':>12} | {'tokens/s':>9} | {'padding':>7} | "
          f"{'vs unpacked':>11}")
    print(f"{'-' * 18}-+-{'-' * 5}-+-{'-' * 12}-+-{'-' * 9}-+-{'-' * 7}-+-{'-' * 11}")
    base = results['unpacked']['tokens/s']
    for mode, row in results.items():
        print(f"{mode:<18} | {row['ratio']:>5.1f} | {row['examples/row']:>12.2f} | {row['tokens/s']:>9.0f} | "
              f"{row['padding']:>7.1%} | {row['tokens/s'] / base:>10.2f}x")


if __name__ == '__main__':
    main()
