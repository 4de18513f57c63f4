"""Seconds and bytes to save and load a checkpoint of an mpt-125m-shaped model, on 1 and 2 ranks (CPU, gloo).

    python scripts/benchmarks/checkpoint_io.py [--folder /tmp/ckpt-bench] [--n-layers 12]

Rows: one process (plain model); two processes with the model sharded by FSDP2 (`llmfoundry.train.parallel`),
sharded only and with fsdp_config.state_dict_type: full (which also gathers and writes model.safetensors).
Checkpoints hold the model weights (save_weights_only): optimizer state would add 2x the bytes of fp32 weights
(AdamW) and measures the same code path. Weights are uninitialised memory: the I/O does not depend on values.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import socket
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from llmfoundry.config.schema import FSDPConfig
from llmfoundry.config.time import Timestamp
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.train import checkpoint
from llmfoundry.train.parallel import build_mesh, parallelize


def _model(n_layers: int, world_size: int) -> MPTForCausalLM:
    """mpt-125m's shape, built on meta and allocated without initialisation (sharded first when world_size > 1)."""
    config = MPTConfig(d_model=768, n_heads=12, n_layers=n_layers, vocab_size=50368, max_seq_len=2048,
                       expansion_ratio=4, no_bias=True, init_device='meta', attn_config={'attn_impl': 'torch'})
    model = MPTForCausalLM(config)
    if world_size > 1:
        fsdp = FSDPConfig()
        parallelize(model, fsdp, build_mesh(fsdp, world_size, 'cpu'), precision='fp32')
    return model.to_empty(device='cpu')


def _folder_bytes(path: str) -> int:
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())


def _timed(fn, world_size: int) -> float:
    if world_size > 1:
        dist.barrier()
    start = time.perf_counter()
    fn()
    if world_size > 1:
        dist.barrier()
    return time.perf_counter() - start


def _measure(rank: int, world_size: int, folder: str, n_layers: int, consolidated: bool) -> tuple[float, float, int]:
    model = _model(n_layers, world_size)
    settings = checkpoint.SaveSettings(folder, weights_only=True, overwrite=True, consolidated=consolidated)
    parts = checkpoint.CheckpointParts(model, timestamp=Timestamp(batch=1))
    path: list[str] = []
    save_s = _timed(lambda: path.append(checkpoint.save(settings, parts, rank=rank, world_size=world_size)), world_size)
    fresh = _model(n_layers, world_size)
    load_s = _timed(lambda: checkpoint.load(path[0], fresh, weights_only=True, rank=rank, world_size=world_size),
                    world_size)
    return save_s, load_s, _folder_bytes(path[0])


def _rank_main(rank: int, world_size: int, port: int, folder: str, n_layers: int, consolidated: bool,
               results) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world_size, timeout=datetime.timedelta(minutes=10))
    try:
        torch.set_num_threads(1)
        measured = _measure(rank, world_size, folder, n_layers, consolidated)
        if rank == 0:
            results.put(measured)
    finally:
        dist.destroy_process_group()


def _two_ranks(folder: str, n_layers: int, consolidated: bool) -> tuple[float, float, int]:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    context = mp.get_context('spawn')
    results = context.SimpleQueue()
    mp.start_processes(_rank_main, args=(2, port, folder, n_layers, consolidated, results), nprocs=2,
                       start_method='spawn')
    return results.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--folder', default='/tmp/llmfoundry-checkpoint-bench')
    parser.add_argument('--n-layers', type=int, default=12)
    args = parser.parse_args()
    shutil.rmtree(args.folder, ignore_errors=True)
    params = sum(p.numel() for p in MPTForCausalLM(MPTConfig(d_model=768, n_heads=12, n_layers=args.n_layers,
                 vocab_size=50368, max_seq_len=2048, no_bias=True, init_device='meta')).parameters())
    torch.set_num_threads(1)
    rows = [
        ('1 rank, sharded (DCP)', _measure(0, 1, f'{args.folder}/one', args.n_layers, False)),
        ('2 ranks FSDP2, sharded (DCP)', _two_ranks(f'{args.folder}/two', args.n_layers, False)),
        ('2 ranks FSDP2, full (DCP + safetensors)', _two_ranks(f'{args.folder}/full', args.n_layers, True)),
    ]
    print(f'mpt-125m shape, {params / 1e6:.1f}M parameters, fp32 weights, CPU / gloo')
    print(f'| {"setup":<40} | {"save s":>7} | {"load s":>7} | {"MB on disk":>10} |')
    print(f'|{"-" * 42}|{"-" * 9}|{"-" * 9}|{"-" * 12}|')
    for name, (save_s, load_s, size) in rows:
        print(f'| {name:<40} | {save_s:7.2f} | {load_s:7.2f} | {size / 1e6:10.1f} |')
    shutil.rmtree(args.folder, ignore_errors=True)


if __name__ == '__main__':
    main()
