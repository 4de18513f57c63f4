from __future__ import annotations

import json
import logging

import pytest
import torch
from callback_state import finish_batch, make_state
from ranks import collect_from_ranks
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from llmfoundry.callbacks.generate import Generate
from llmfoundry.config.schema import FSDPConfig
from llmfoundry.config.validation import ConfigError
from llmfoundry.models.mpt.configuration_mpt import MPTConfig
from llmfoundry.models.mpt.modeling_mpt import MPTForCausalLM
from llmfoundry.registry import callbacks
from llmfoundry.train.parallel import build_mesh, parallelize

WORDS = ['<pad>', '<eos>', 'the', 'cat', 'sat', 'on', 'mat', 'a', 'dog']


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token='<pad>'))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token='<eos>', pad_token='<pad>')


@pytest.fixture
def state(tmp_path):
    torch.manual_seed(0)
    model = MPTForCausalLM(MPTConfig(d_model=16, n_heads=2, n_layers=1, max_seq_len=16, vocab_size=len(WORDS),
                                     attn_config={'attn_impl': 'torch'}))
    state = make_state(tmp_path, model)
    state.tokenizer = tiny_tokenizer()
    return state


def test_generates_at_the_interval_and_writes_jsonl_on_rank0(state, logger, caplog):
    callback = callbacks.build('generate', {'prompts': ['the cat sat', 'a'], 'interval': '2ba', 'max_new_tokens': 3,
                                            'do_sample': False}, 'callbacks.generate')
    path = state.run_folder / 'generations.jsonl'
    with caplog.at_level(logging.INFO, logger='llmfoundry.callbacks.generate'):
        for _ in range(3):
            callback.batch_start(state, logger)
            finish_batch(state)
            callback.batch_end(state, logger)
            if state.timestamp.batch == 1:
                assert not path.exists()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r['batch'], r['tokens'], r['prompt']) for r in records] == [(2, 64, 'the cat sat'), (2, 64, 'a')]
    assert all(set(r['generation'].split()) <= set(WORDS) for r in records)
    assert len(records[1]['generation'].split()) <= 3
    assert "generate at batch 2: 'the cat sat' ->" in caplog.text
    assert state.model.training and state.tokenizer.padding_side == 'right'


def test_greedy_generation_does_not_depend_on_batching_or_touch_the_rng(state):
    prompts = ['the cat sat', 'a', 'on the mat']
    torch.manual_seed(1)
    together = Generate(prompts, interval='1ba', max_new_tokens=4, do_sample=False).generate(state)
    after = torch.rand(1)
    torch.manual_seed(1)
    sampled = Generate(prompts, interval='1ba', batch_size=1, max_new_tokens=4, do_sample=True).generate(state)
    assert torch.rand(1) == after  # sampling ran on a forked RNG
    assert len(together) == len(sampled) == 3
    assert together == Generate(prompts, interval='1ba', batch_size=1, max_new_tokens=4,
                                do_sample=False).generate(state)


def test_other_ranks_do_not_write(tmp_path, state, logger):
    state.dist = type(state.dist)(rank=1, world_size=2, local_rank=1, device=state.dist.device)
    callback = Generate(['the'], batch_log_interval=1, max_new_tokens=1)
    callback.batch_start(state, logger)
    finish_batch(state)
    callback.batch_end(state, logger)
    assert not (state.run_folder / 'generations.jsonl').exists()


@pytest.mark.parametrize(('kwargs', 'message'), [
    ({'interval': '1ba', 'max_new_token': 3}, "callbacks.generate.max_new_token.*did you mean 'callbacks.generate."
                                              "max_new_tokens'"),
    ({}, 'exactly one of interval'),
    ({'interval': '1ba', 'batch_log_interval': 1}, 'exactly one of interval'),
    ({'interval': '1 batch'}, 'callbacks.generate.interval'),
])
def test_bad_configs_fail_at_startup(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        callbacks.build('generate', {'prompts': ['x'], **kwargs}, 'callbacks.generate')


def _sample_on_rank(rank: int, world_size: int, run_folder, results) -> None:
    """A FULL_SHARD model samples with a per-rank seed and an eos token: the ranks finish at different lengths."""
    torch.manual_seed(0)
    model = MPTForCausalLM(MPTConfig(d_model=16, n_heads=2, n_layers=2, max_seq_len=16, vocab_size=len(WORDS),
                                     attn_config={'attn_impl': 'torch'}))
    fsdp = FSDPConfig(sharding_strategy='FULL_SHARD')
    parallelize(model, fsdp, build_mesh(fsdp, world_size, 'cpu'), precision='fp32')
    state = make_state(run_folder, model, world_size=world_size, rank=rank)
    state.tokenizer = tiny_tokenizer()
    torch.manual_seed(rank)
    callback = Generate(['the cat'], interval='1ba', max_new_tokens=12, do_sample=True, temperature=3.0,
                        eos_token_id=WORDS.index('the'))  # rank 0 stops after one word
    results[rank] = [len(text.split()) for text in callback.generate(state)]


@pytest.mark.slow
def test_sharded_ranks_that_finish_at_different_lengths_stay_in_step(tmp_path):
    lengths = collect_from_ranks(_sample_on_rank, 2, tmp_path, timeout=60)
    assert lengths[0] != lengths[1]  # one rank hit eos first and kept running forwards for the other
