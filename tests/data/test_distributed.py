"""Two ranks (gloo): disjoint shards of the epoch, exact resume, and resume on a different rank count."""

from __future__ import annotations

import os
from collections import Counter

import pytest
import torch
import torch.distributed as dist
from ranks import run_ranks

from llmfoundry.data.prep.cli import main as prep_main
from llmfoundry.data.text_loader import build_text_dataloader
from llmfoundry.data.tokenizers import build_tokenizer

L, K, DEVICE_BATCH = 128, 3, 2


def _cfg(local: str) -> dict:
    # num_canonical_nodes fixed: the global sample order then does not depend on the number of ranks.
    return {'name': 'text', 'drop_last': True,
            'dataset': {'local': local, 'max_seq_len': L, 'shuffle': True, 'shuffle_seed': 11,
                        'num_canonical_nodes': 2, 'eos_token_id': 0}}


def _run(cfg: dict, tokenizer, batch: int, state: dict | None = None, stop: int | None = None):
    """Batches (input_ids) from a fresh loader, optionally resumed from `state` or stopped after `stop`."""
    loader = build_text_dataloader(cfg, tokenizer, batch)
    if state is not None:
        loader.load_state_dict(state)
    out = []
    for b in loader:
        out.append(b['input_ids'])
        if len(out) == stop:
            break
    return out, loader.state_dict()


def _worker(rank: int, world: int, local: str, tokenizer_dir: str, out_dir: str) -> None:
    tokenizer = build_tokenizer(tokenizer_dir)
    full, _ = _run(_cfg(local), tokenizer, DEVICE_BATCH)
    head, state = _run(_cfg(local), tokenizer, DEVICE_BATCH, stop=K)
    rest, _ = _run(_cfg(local), tokenizer, DEVICE_BATCH, state=state)
    torch.save({'full': full, 'head': head, 'rest': rest, 'state': state}, os.path.join(out_dir, f'{rank}.pt'))
    dist.barrier()


def _rows(batch: torch.Tensor) -> list[list[int]]:
    return sorted(batch.tolist())


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_ranks_resume_and_change_rank_count(tmp_path, corpus_jsonl, tokenizer, tokenizer_dir):
    local = str(tmp_path / 'mds')
    assert prep_main(['convert_dataset_json', '--path', str(corpus_jsonl), '--out_root', local,
                      '--concat_tokens', str(L), '--tokenizer', tokenizer_dir, '--eos_text', '<|endoftext|>']) == 0
    run_ranks(_worker, 2, local, tokenizer_dir, str(tmp_path), timeout=200)
    r0, r1 = (torch.load(tmp_path / f'{r}.pt') for r in (0, 1))

    # Each rank: the resumed loader continues exactly where the interrupted one stopped.
    for r in (r0, r1):
        assert len(r['full']) > K + 2
        assert all(torch.equal(a, b) for a, b in zip(r['head'] + r['rest'], r['full'], strict=True))
    assert r0['state'] == r1['state'] and r0['state']['sample_in_epoch'] == K * DEVICE_BATCH * 2
    # The ranks split the epoch: every sample once, up to streaming padding the epoch to whole batches.
    everything, _ = _run(_cfg(local), tokenizer, 1)
    all_rows = Counter(tuple(b[0].tolist()) for b in everything)
    seen = Counter(tuple(row) for r in (r0, r1) for b in r['full'] for row in b.tolist())
    assert sum(((seen - all_rows) + (all_rows - seen)).values()) < 2 * 2 * DEVICE_BATCH

    # One rank with the same global batch sees the same global batches, and resumes from the 2-rank state.
    single, _ = _run(_cfg(local), tokenizer, 2 * DEVICE_BATCH)
    assert [_rows(b) for b in single] == [_rows(torch.cat([a, b])) for a, b in zip(r0['full'], r1['full'])]
    resumed, _ = _run(_cfg(local), tokenizer, 2 * DEVICE_BATCH, state=r0['state'])
    assert [_rows(b) for b in resumed] == [_rows(torch.cat([a, b])) for a, b in zip(r0['rest'], r1['rest'])]
