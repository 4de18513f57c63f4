"""build_finetuning_dataloader on local JSON Lines: batches, drops, packing, bad data, check_packing_model."""

from __future__ import annotations

import json
import logging

import pytest

from llmfoundry.config.validation import ConfigError
from llmfoundry.data.finetuning.formats import FinetuningDataError
from llmfoundry.data.finetuning.loader import build_finetuning_dataloader
from llmfoundry.data.finetuning.packing import auto_packing_ratio
from llmfoundry.data.finetuning.preflight import check_finetuning_data, check_packing_model

N = -100


def jsonl(tmp_path, examples, name='train.jsonl'):
    path = tmp_path / name
    path.write_text(''.join(json.dumps(e) + '\n' for e in examples))
    return str(path)


def loader_cfg(path, **dataset):
    return {'name': 'finetuning', 'dataset': {'hf_name': 'json', 'split': 'train', 'hf_kwargs': {'data_files': path},
                                              'max_seq_len': 8, 'decoder_only_format': True, **dataset}}


def test_batches_are_padded_masked_and_drops_are_logged_once(tmp_path, tok, caplog):
    path = jsonl(tmp_path, [{'prompt': 'a', 'response': 'b'}, {'prompt': 'a b c d e f g h', 'response': 'c'},
                            {'prompt': 'c d', 'response': 'e'}])
    with caplog.at_level(logging.WARNING):
        loader = build_finetuning_dataloader(loader_cfg(path), tok, 2)
    assert [r.message for r in caplog.records if 'dropped' in r.message] == [
        f"'json' split 'train' (files: {path}): dropped 1 of 3 examples with no loss-bearing token within "
        'max_seq_len=8 (an empty prompt or response, or a prompt that fills max_seq_len)']
    [batch] = list(loader)
    assert batch['input_ids'].tolist() == [[9, 10, 0, 1, 1, 1, 1, 1], [11, 12, 13, 0, 1, 1, 1, 1]]
    assert batch['labels'].tolist() == [[N, 10, 0, N, N, N, N, N], [N, N, 13, 0, N, N, N, N]]
    assert batch['attention_mask'].tolist() == [[1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0]]
    assert batch['sequence_id'].tolist() == [[0, 0, 0, -1, -1, -1, -1, -1], [0, 0, 0, 0, -1, -1, -1, -1]]


def test_packing_two_examples_per_row(tmp_path, tok):
    path = jsonl(tmp_path, [{'prompt': 'a', 'response': 'b'}, {'prompt': 'c d', 'response': 'e'}])
    [batch] = list(build_finetuning_dataloader(loader_cfg(path, packing_ratio=2), tok, 1))
    # longest first: [c d e EOS] then [a b EOS]; the second example's first label is masked
    assert batch['input_ids'].tolist() == [[11, 12, 13, 0, 9, 10, 0, 1]]
    assert batch['labels'].tolist() == [[N, N, 13, 0, N, 10, 0, N]]
    assert batch['sequence_id'].tolist() == [[0, 0, 0, 0, 1, 1, 1, -1]]


def test_allow_pad_trimming_and_resume_state(tmp_path, tok):
    path = jsonl(tmp_path, [{'prompt': 'a', 'response': 'b'}] * 3)
    loader = build_finetuning_dataloader(loader_cfg(path, allow_pad_trimming=True, max_seq_len=16), tok, 1)
    shapes = [b['input_ids'].shape[1] for b in loader]
    assert shapes == [16, 8, 8]
    loader.load_state_dict({'epoch': 1, 'consumed': 2})
    assert len(list(loader)) == 1 and loader.state_dict() == {'epoch': 2, 'consumed': 0}


def test_auto_packing_ratio_is_picked_and_logged(tmp_path, tok, caplog):
    path = jsonl(tmp_path, [{'prompt': 'abcdefgh'[i % 8], 'response': 'b'} for i in range(40)])
    with caplog.at_level(logging.INFO):
        loader = build_finetuning_dataloader(loader_cfg(path, packing_ratio='auto', max_seq_len=300), tok, 2)
    # 3-token examples: profiles ratios 1 .. 3 (max_seq_len / 100); each packs without waste
    assert 'train_loader.dataset.packing_ratio auto: picked 3.0 from 40 profiled examples' in caplog.text
    assert loader.batch_size == 6


def test_auto_packing_stops_at_first_waste():
    # rows of 60 tokens fill a 120-token row two at a time: packing 3 per row would waste the third
    assert auto_packing_ratio([60] * 4000, 120, 10) == 1.2
    assert auto_packing_ratio([60] * 4000, 300, 1) == 3.0
    assert auto_packing_ratio([150] * 4000, 300, 1) == 2.1  # int(2.1 * 1) = 2 rows per batch; 3 would waste
    assert auto_packing_ratio([10] * 10, 100, 1) == 1.0  # too short to pack
    # 30 short examples could all share one row, but a ratio needing more examples than that is never picked
    assert auto_packing_ratio([10] * 30, 2048, 1) == 20.5  # the largest candidate with a full batch of <= 30


@pytest.mark.parametrize(('examples', 'match'), [
    ([{'prompt': 'a', 'response': 'b'}, {'question': 'a', 'response': 'b'}],
     r"example 1: unknown example format with keys \['question', 'response'\]"),
    ([{'messages': [{'role': 'user', 'content': 'a'}, {'role': 'assistant', 'content': 'b'}]},
      {'messages': [{'role': 'assistant', 'content': 'a'}, {'role': 'user', 'content': 'b'}]}],
     r'example 1: a chat must end with an assistant message'),
    ([{'prompt': 'a', 'response': ''}], r'no usable examples \(1 read, 1 dropped'),
])
def test_bad_data_names_the_file_and_example(tmp_path, tok, examples, match):
    path = jsonl(tmp_path, examples)
    with pytest.raises(FinetuningDataError, match=match) as info:
        build_finetuning_dataloader(loader_cfg(path), tok, 1)
    assert path in str(info.value)


def test_empty_dataset_and_bad_preprocessor(tmp_path, tok):
    empty = tmp_path / 'empty.jsonl'
    empty.write_text('')
    with pytest.raises(ValueError, match='empty.jsonl'):
        build_finetuning_dataloader(loader_cfg(str(empty)), tok, 1)
    path = jsonl(tmp_path, [{'q': 'a', 'r': 'b'}])
    with pytest.raises(ConfigError, match=r"preprocessing_fn='no_such_module:f' cannot be imported"):
        build_finetuning_dataloader(loader_cfg(path, preprocessing_fn='no_such_module:f'), tok, 1)
    [batch] = list(build_finetuning_dataloader(loader_cfg(path, preprocessing_fn={'prompt': 'q', 'response': 'r'}),
                                               tok, 1))
    assert batch['labels'][0, :3].tolist() == [N, 10, 0]


def test_config_errors(tmp_path, tok):
    path = jsonl(tmp_path, [{'prompt': 'a', 'response': 'b'}])
    for extra, match in [({'decoder_only_format': False}, 'decoder_only_format'),
                         ({'remote': 's3://x/y'}, 'MDS keys'), ({'packing_ratio': 0.5}, 'packing_ratio'),
                         ({'seq_parallel_replication': 2}, 'sequence parallelism'), ({'bogus': 1}, 'bogus')]:
        with pytest.raises(ConfigError, match=match):
            build_finetuning_dataloader(loader_cfg(path, **extra), tok, 1)
    with pytest.raises(ConfigError, match='HF_HUB_OFFLINE'):
        build_finetuning_dataloader({'dataset': {'hf_name': 'nobody/nothing', 'split': 'train', 'max_seq_len': 8,
                                                 'decoder_only_format': True}}, tok, 1)


def test_packing_without_sequence_id_is_one_warning_that_says_what_to_set(caplog):
    loader = {'dataset': {'packing_ratio': 'auto'}}
    with caplog.at_level(logging.WARNING):
        check_packing_model(loader, {'name': 'mpt_causal_lm', 'attn_config': {'attn_impl': 'torch'}}, 'eval_loader')
        check_packing_model(loader, {'name': 'mpt_causal_lm', 'attn_config': {'attn_uses_sequence_id': True}})
        check_packing_model({'dataset': {}}, {'name': 'mpt_causal_lm'})
        check_packing_model(loader, {'name': 'hf_causal_lm'})
    assert [r.message for r in caplog.records] == [
        "eval_loader.dataset.packing_ratio='auto' packs several examples per row, but "
        'model.attn_config.attn_uses_sequence_id is false, so packed examples attend to each other (llm-foundry '
        'trains this way too); set model.attn_config.attn_uses_sequence_id: true to keep them apart']


def test_missing_local_data_is_a_config_error_naming_the_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'data').mkdir()
    (tmp_path / 'data' / 'train.jsonl').write_text('{}\n')
    hf = {'hf_name': 'json', 'split': 'train'}
    check_finetuning_data({'dataset': {**hf, 'hf_kwargs': {'data_files': {'train': 'data/*.jsonl'}}}}, 'train_loader')
    check_finetuning_data({'dataset': {**hf, 'hf_kwargs': {'data_dir': 'data', 'data_files': 'train.jsonl'}}}, 'x')
    check_finetuning_data({'dataset': {'hf_name': 'mosaicml/dolly_hhrlhf', 'split': 'train'}}, 'x')  # on the hub
    cases = [({**hf, 'hf_kwargs': {'data_files': ['data/train.jsonl', 'data/test.jsonl']}},
              "train_loader.dataset.hf_kwargs.data_files[1]='data/test.jsonl': no such file"),
             ({**hf, 'hf_kwargs': {'data_dir': 'data', 'data_files': {'test': 'test.jsonl'}}},
              "train_loader.dataset.hf_kwargs.data_files.test='test.jsonl': no such file under ./data"),
             ({**hf, 'hf_kwargs': {'data_dir': 'nowhere'}},
              "train_loader.dataset.hf_kwargs.data_dir='nowhere': ./nowhere is not a folder"),
             ({'hf_name': './my-data', 'split': 'train'}, "train_loader.dataset.hf_name='./my-data' does not exist"),
             ({'local': 'mds', 'split': 'train'}, "train_loader.dataset.local='mds' does not exist and "
              'train_loader.dataset.remote is not set; create the shards with: llmfoundry data-prep '
              'convert_finetuning_dataset --dataset json --data_files YOUR_FILE.jsonl --splits train --out_root mds '
              '--tokenizer tok --max_seq_len 2048')]
    for dataset, message in cases:
        with pytest.raises(ConfigError) as error:
            check_finetuning_data({'dataset': dataset}, 'train_loader', 'tok')
        assert str(error.value).startswith(message), str(error.value)
