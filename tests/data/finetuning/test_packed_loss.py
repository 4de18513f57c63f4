"""Packing leaves every example's loss unchanged (fp32) with a tiny ALiBi MPT using sequence_id, torch and flex."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmfoundry.data.finetuning.collate import FinetuningCollator
from llmfoundry.data.finetuning.packing import Packer
from llmfoundry.data.labels import IGNORE_INDEX
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM

ROWS = [([9, 10, 11, 12, 0], [-100, -100, 11, 12, 0]), ([13, 14, 0], [-100, 14, 0]),
        ([5, 17, 6, 9, 10, 11, 0], [-100, -100, -100, 9, 10, 11, 0]), ([15, 16, 0], [15, 16, 0])]


def per_example_losses(model, batch):
    """Summed next-token loss of each example (by sequence_id), shifting labels as the trainer does."""
    logits = model(input_ids=batch['input_ids'], attention_mask=batch['attention_mask'],
                   sequence_id=batch['sequence_id']).logits.float()
    targets = F.pad(batch['labels'][:, 1:], (0, 1), value=IGNORE_INDEX)
    losses = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction='none')
    found = []
    for row in range(len(batch['input_ids'])):
        for doc in range(int(batch['sequence_id'][row].max()) + 1):
            mask = batch['sequence_id'][row] == doc
            found.append((batch['input_ids'][row][mask].tolist()[0], losses[row][mask].sum().item()))
    return sorted(found)


@pytest.mark.parametrize('attn_impl', ['torch', 'flex'])
def test_packed_and_unpacked_losses_match(attn_impl):
    torch.manual_seed(0)
    config = MPTConfig(d_model=32, n_heads=2, n_layers=2, vocab_size=24, max_seq_len=16, no_bias=True,
                       learned_pos_emb=False,
                       attn_config={'attn_impl': attn_impl, 'alibi': True, 'attn_uses_sequence_id': True})
    model = MPTForCausalLM(config).eval()
    unpacked = FinetuningCollator(1, 16)(ROWS)
    packed = FinetuningCollator(1, 16, packer=Packer(2, 16))(ROWS)
    assert packed['input_ids'].shape == (2, 16) and int(packed['sequence_id'].max()) == 2  # 7 + 5 + 3 tokens, then 3
    with torch.no_grad():
        expected, got = per_example_losses(model, unpacked), per_example_losses(model, packed)
    assert [key for key, _ in got] == [key for key, _ in expected]
    torch.testing.assert_close([loss for _, loss in got], [loss for _, loss in expected], rtol=1e-5, atol=1e-5)
