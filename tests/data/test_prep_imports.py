"""What the data-prep entry paths import, measured in a fresh interpreter.

`llmfoundry tokenizer train` needs only `tokenizers`: no torch, no transformers. The MDS conversions with a
tokenizer.json tokenizer need neither, nor mosaicml-streaming (whose `__init__` imports torch and
transformers): shards come from llmfoundry.data.mds_writer, token ids from llmfoundry.data.fast_tokenizer.
convert_finetuning_dataset on prompt/response data likewise (chat data needs transformers for its template).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mds_reference import expected_rows, read_rows

from llmfoundry.data.stdlib_corpus import stdlib_sources

PROBE = """
import json, sys
from llmfoundry.cli import main
code = main(sys.argv[1:])
print(json.dumps({'code': code, 'torch': 'torch' in sys.modules, 'transformers': 'transformers' in sys.modules}))
"""


def test_tokenizer_train_imports_neither_torch_nor_transformers(tmp_path: Path) -> None:
    corpus = tmp_path / 'corpus'
    corpus.mkdir()
    for path in stdlib_sources(200_000, 50_000):
        (corpus / f'{path.stem}.txt').write_text(path.read_text(encoding='utf-8'), encoding='utf-8')
    out = tmp_path / 'tok'
    result = subprocess.run(
        [sys.executable, '-c', PROBE, 'tokenizer', 'train', '--input', str(corpus), '--vocab-size', '600',
         '--out', str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {'code': 0, 'torch': False, 'transformers': False}

    # The folder written without transformers is the one transformers itself writes, and loads as before.
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    ours = AutoTokenizer.from_pretrained(str(out))
    assert isinstance(ours, PreTrainedTokenizerFast) and len(ours) == 600
    assert (ours.bos_token, ours.eos_token, ours.unk_token, ours.pad_token) == (
        '<|endoftext|>',
        '<|endoftext|>',
        '<|endoftext|>',
        '<|padding|>',
    )
    assert ours.model_max_length == 2048 and ours.model_input_names == ['input_ids', 'attention_mask']
    reference = tmp_path / 'reference'
    PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_file(str(out / 'tokenizer.json')),
        bos_token='<|endoftext|>', eos_token='<|endoftext|>', unk_token='<|endoftext|>', pad_token='<|padding|>',
        model_max_length=2048, model_input_names=['input_ids', 'attention_mask'],
    ).save_pretrained(str(reference))  # fmt: skip
    for name in ('tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'):
        assert json.loads((out / name).read_text()) == json.loads((reference / name).read_text()), name
    text = 'def f(x):\n    return x  # <|endoftext|>'
    assert ours(text)['input_ids'] == AutoTokenizer.from_pretrained(str(reference))(text)['input_ids']


def test_local_conversion_does_not_import_ray(tmp_path: Path) -> None:
    """Ray is an extra: only `--executor ray` imports it."""
    path = tmp_path / 'in'
    path.mkdir()
    for name in ('a.jsonl', 'b.jsonl'):
        (path / name).write_text(''.join(json.dumps({'text': f'{name} {i}'}) + '\n' for i in range(5)))
    probe = PROBE.replace("'torch': 'torch' in sys.modules", "'ray': 'ray' in sys.modules")
    result = subprocess.run(
        [sys.executable, '-c', probe, 'data-prep', 'convert_dataset_json', '--path', str(path), '--out_root',
         str(tmp_path / 'out'), '--num-tasks', '2'],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])['ray'] is False
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == [
        '.conversion_args.json',
        '.conversion_done',
        'group_00000',
        'group_00001',
        'index.json',
    ]


HEAVY_PROBE = """
import json, sys
from llmfoundry.cli import main
code = main(sys.argv[1:])
print(json.dumps({'code': code, 'heavy': [m for m in ('torch', 'transformers', 'streaming') if m in sys.modules]}))
"""


@pytest.mark.parametrize('command', ['convert_text_to_mds', 'convert_dataset_json', 'convert_dataset_hf'])
def test_conversions_import_no_torch_transformers_streaming(
    command: str, tmp_path: Path, corpus_docs: list[str], tokenizer, tokenizer_dir: str, subprocess_env: dict
) -> None:
    """The whole conversion (tokenizer.json tokenizer, zstd shards, local output) in a fresh interpreter; the
    rows are the ones transformers' tokenizer gives."""
    docs = corpus_docs[:6]
    (tmp_path / 'txt').mkdir()
    for i, doc in enumerate(docs):
        (tmp_path / 'txt' / f'{i}.txt').write_text(doc, encoding='utf-8')
    jsonl = tmp_path / 'docs.jsonl'
    jsonl.write_text(''.join(json.dumps({'text': d}) + '\n' for d in docs), encoding='utf-8')
    out = tmp_path / 'out'
    inputs = {
        'convert_text_to_mds': ['--input_folder', str(tmp_path / 'txt'), '--output_folder', str(out), '--processes',
                                '1'],
        'convert_dataset_json': ['--path', str(jsonl), '--out_root', str(out)],
        'convert_dataset_hf': ['--dataset', 'json', '--data_files', f'train={jsonl}', '--out_root', str(out)],
    }[command]  # fmt: skip
    eos = tokenizer.eos_token
    result = subprocess.run(
        [sys.executable, '-c', HEAVY_PROBE, 'data-prep', command, *inputs, '--concat_tokens', '32', '--tokenizer',
         tokenizer_dir, '--eos_text', eos, '--compression', 'zstd'],
        capture_output=True, text=True, timeout=120, env=subprocess_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {'code': 0, 'heavy': []}
    dataset = out / 'train' if command == 'convert_dataset_hf' else out
    assert read_rows(str(dataset)) == expected_rows(docs, tokenizer, 32, eos_text=eos)


def _bos_tokenizer(tokenizer_dir: str, out: Path) -> str:
    """The session tokenizer as GPTNeoX with add_bos_token and its own BOS (<|padding|>, id 1): every encoding
    starts with BOS, so the converter must drop the response's by id."""
    shutil.copytree(tokenizer_dir, out)
    config = json.loads((out / 'tokenizer_config.json').read_text())
    config.update(tokenizer_class='GPTNeoXTokenizerFast', add_bos_token=True, bos_token='<|padding|>')
    (out / 'tokenizer_config.json').write_text(json.dumps(config))
    return str(out)


@pytest.mark.parametrize('bos', [False, True], ids=['plain', 'bos'])
def test_finetuning_conversion_imports_neither_torch_nor_transformers(
    bos: bool, tmp_path: Path, corpus_docs: list[str], tokenizer_dir: str, subprocess_env: dict,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """convert_finetuning_dataset on prompt/response JSONL with a tokenizer.json tokenizer, in a fresh interpreter:
    the turns are transformers' ids (an example that cannot train at --max_seq_len is dropped), and the shards
    are byte for byte those of the same conversion with transformers' tokenizer."""
    from transformers import AutoTokenizer

    from llmfoundry.data.prep import finetuning
    from llmfoundry.data.tokenizers import build_tokenizer

    tok_dir = _bos_tokenizer(tokenizer_dir, tmp_path / 'bos-tok') if bos else tokenizer_dir
    docs = [doc for doc in corpus_docs if len(doc) >= 3000][:6]
    examples = [{'prompt': doc[:300], 'response': doc[300:500]} for doc in docs[:5]]
    examples.append({'prompt': docs[5][:3000], 'response': 'x'})  # the prompt fills --max_seq_len
    data = tmp_path / 'train.jsonl'
    data.write_text(''.join(json.dumps(e) + '\n' for e in examples), encoding='utf-8')
    flags = ['--dataset', 'json', '--data_files', str(data), '--splits', 'train', '--skip-preprocessing',
             '--tokenizer', tok_dir, '--max_seq_len', '256', '--compression', 'zstd']  # fmt: skip
    result = subprocess.run(
        [sys.executable, '-c', HEAVY_PROBE, 'data-prep', 'convert_finetuning_dataset', *flags, '--out_root',
         str(tmp_path / 'out')],
        capture_output=True, text=True, timeout=120, env=subprocess_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {'code': 0, 'heavy': []}
    assert 'dropped 1 examples' in result.stderr

    monkeypatch.setattr(finetuning, 'PrepTokenizer', build_tokenizer)  # the tokenizer the converter used before
    assert finetuning.main([*flags, '--out_root', str(tmp_path / 'reference')]) == 0
    ours, reference = tmp_path / 'out' / 'train', tmp_path / 'reference' / 'train'
    assert sorted(p.name for p in ours.iterdir()) == sorted(p.name for p in reference.iterdir())
    for path in reference.iterdir():
        assert (ours / path.name).read_bytes() == path.read_bytes(), path.name

    hf = AutoTokenizer.from_pretrained(tok_dir)
    expected = []
    for example in examples[:-1]:
        prompt, response = hf(example['prompt'])['input_ids'], hf(example['response'])['input_ids']
        if bos:
            assert prompt[0] == response[0] == hf.bos_token_id == 1
            response = response[1:]
        expected.append([{'input_ids': prompt, 'labels': response}])
    assert read_rows(str(tmp_path / 'out' / 'train'), column='turns') == expected
