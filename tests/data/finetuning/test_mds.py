"""MDS: the converter's output and an MDS in llm-foundry's layouts read back like the in-memory path; inspect."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mds_reference import read_rows
from streaming import MDSWriter

from llmfoundry.data.finetuning.formats import FinetuningDataError
from llmfoundry.data.finetuning.inspect import main as inspect_main
from llmfoundry.data.finetuning.loader import build_finetuning_dataloader
from llmfoundry.data.finetuning.tokenize import tokenize_example
from llmfoundry.data.prep.finetuning import main as convert_main

N = -100
EXAMPLES = [{'prompt': 'a b', 'response': 'c d'}, {'prompt': 'e', 'response': 'f'},
            {'prompt': 'a b c d e f g h', 'response': 'q'}]  # the last one cannot train at max_seq_len 8


def dataset_cfg(**keys):
    return {'name': 'finetuning', 'dataset': {'max_seq_len': 8, 'decoder_only_format': True, **keys}}


def rows(loader):
    return [tuple(loader.dataset[i]) for i in range(len(loader.dataset))]


def test_converter_output_reads_back_like_the_in_memory_path(tmp_path, tok):
    tok.save_pretrained(tmp_path / 'tok')
    data = tmp_path / 'train.jsonl'
    data.write_text(''.join(json.dumps(e) + '\n' for e in EXAMPLES))
    out = tmp_path / 'mds'
    assert convert_main(['--dataset', 'json', '--data_files', str(data), '--splits', 'train', '--skip-preprocessing',
                         '--out_root', str(out), '--tokenizer', str(tmp_path / 'tok'), '--max_seq_len', '8']) == 0
    index = json.loads((out / 'train' / 'index.json').read_text())
    assert index['shards'][0]['column_names'] == ['turns'] and index['shards'][0]['samples'] == 2
    from_mds = build_finetuning_dataloader(dataset_cfg(local=str(out), split='train'), tok, 2)
    in_memory = build_finetuning_dataloader(
        dataset_cfg(hf_name='json', split='train', hf_kwargs={'data_files': str(data)}), tok, 2)
    assert rows(from_mds) == rows(in_memory) == [([9, 10, 11, 12, 0], [N, N, 11, 12, 0]), ([13, 14, 0], [N, 14, 0])]
    assert [b['labels'].tolist() for b in from_mds] == [b['labels'].tolist() for b in in_memory]
    # text layout (no --tokenizer): prompt/response strings, tokenised by the loader
    assert convert_main(['--dataset', 'json', '--data_files', str(data), '--splits', 'train', '--skip-preprocessing',
                         '--out_root', str(tmp_path / 'text')]) == 0
    from_text = build_finetuning_dataloader(dataset_cfg(local=str(tmp_path / 'text'), split='train'), tok, 2)
    assert [tuple(from_text.dataset[i]) for i in (0, 1)] == rows(in_memory)
    with pytest.raises(FinetuningDataError, match='MDS sample 2 has no loss-bearing token within max_seq_len=8'):
        from_text.dataset[2]  # streamed samples cannot be dropped: the error says to convert with a tokenizer


def test_converter_chat_turns_are_the_loaders(tmp_path, tok):
    """Chat with --tokenizer: the chat template is rendered by transformers' tokenizer (loaded for it), and the
    stored turns are exactly what the loader's tokenising gives."""
    tok.save_pretrained(tmp_path / 'tok')
    chats = [[('user', 'hi a'), ('assistant', 'b c')],
             [('system', 'q'), ('user', 'd'), ('assistant', 'e'), ('user', 'f'), ('assistant', 'g h')]]
    chats = [[{'role': role, 'content': content} for role, content in chat] for chat in chats]
    data = tmp_path / 'chat.jsonl'
    data.write_text(''.join(json.dumps({'messages': m}) + '\n' for m in chats))
    out = tmp_path / 'mds'
    assert convert_main(['--dataset', 'json', '--data_files', str(data), '--splits', 'train', '--skip-preprocessing',
                         '--out_root', str(out), '--tokenizer', str(tmp_path / 'tok'), '--max_seq_len', '64']) == 0
    stored = read_rows(str(out / 'train'), column='turns')
    assert stored == [tokenize_example({'messages': m}, tok) for m in chats]
    assert stored[0] == [{'input_ids': [3, 5, 17, 9, 4, 3, 6], 'labels': [10, 11, 4]}]  # ChatML, no template set
    assert len(stored[1]) == 2


def test_llmfoundry_layouts(tmp_path, tok):
    turns = [{'input_ids': [3, 5, 17, 4, 3, 6], 'labels': [9, 4]},
             {'input_ids': [3, 5, 11, 4, 3, 6], 'labels': [12, 4]}]
    with MDSWriter(out=str(tmp_path / 'turns' / 'train'), columns={'turns': 'json'}) as writer:
        writer.write({'turns': turns})
    with MDSWriter(out=str(tmp_path / 'legacy' / 'train'), columns={'input_ids': 'bytes', 'labels': 'bytes'}) as w:
        w.write({'input_ids': np.array([9, 10], np.int64).tobytes(), 'labels': np.array([11], np.int64).tobytes()})
    with MDSWriter(out=str(tmp_path / 'chat' / 'train'), columns={'messages': 'json'}) as writer:
        writer.write({'messages': [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'a'}]})
    cfg = dataset_cfg(local=str(tmp_path / 'turns'), split='train', max_seq_len=32, target_responses='all')
    assert rows(build_finetuning_dataloader(cfg, tok, 1)) == [
        ([3, 5, 17, 4, 3, 6, 9, 4, 3, 5, 11, 4, 3, 6, 12, 4, 0], [N] * 6 + [9, 4] + [N] * 6 + [12, 4, 0])]
    legacy = dataset_cfg(local=str(tmp_path / 'legacy'), split='train')
    assert rows(build_finetuning_dataloader(legacy, tok, 1)) == [([9, 10, 11, 0], [N, N, 11, 0])]
    chat = dataset_cfg(local=str(tmp_path / 'chat'), split='train', max_seq_len=32)
    assert rows(build_finetuning_dataloader(chat, tok, 1)) == [([3, 5, 17, 4, 3, 6, 9, 4, 0], [N] * 6 + [9, 4, 0])]


def test_inspect_prints_and_writes_jsonl(tmp_path, tok, capsys):
    tok.save_pretrained(tmp_path / 'tok')
    data = tmp_path / 'train.jsonl'
    data.write_text(''.join(json.dumps(e) + '\n' for e in EXAMPLES))
    yaml = tmp_path / 'run.yaml'
    yaml.write_text(f"variables: {{len: 8}}\ntokenizer: {{name: {tmp_path / 'tok'}}}\n"
                    f"train_loader:\n  name: finetuning\n"
                    f"  dataset: {{hf_name: json, split: train, hf_kwargs: {{data_files: {data}}}, "
                    "max_seq_len: '${variables.len}', decoder_only_format: true, packing_ratio: 2}\n")
    out = tmp_path / 'rows.jsonl'
    assert inspect_main([str(yaml), '--num-examples', '1', '--jsonl', str(out)]) == 0
    assert capsys.readouterr().out == '--- example 0: 5 tokens, 3 with loss ---\na b[[c d <|endoftext|>]]\n'
    assert json.loads(out.read_text()) == {'input_ids': [9, 10, 11, 12, 0], 'labels': [N, N, 11, 12, 0]}
