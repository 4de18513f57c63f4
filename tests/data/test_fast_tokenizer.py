"""llmfoundry.data.fast_tokenizer: the same token ids as transformers' AutoTokenizer, without importing it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer

from llmfoundry import storage
from llmfoundry.data.fast_tokenizer import FastTokenizer, TransformersTokenizer, load_fast, load_tokenizer

EOT = '<|endoftext|>'
EDGE_TEXTS = [
    '', ' ', '\n\n\t', '  two leading spaces', 'héllo wörld — naïve 日本語 🙂 \u200b', f'a{EOT}b', EOT,
    f'def f(x):\n    return x  # {EOT}\n', 'x' * 3000,
]  # fmt: skip


def _texts(corpus_docs: list[str]) -> list[str]:
    return EDGE_TEXTS + [doc[:2000] for doc in corpus_docs[:20]]


def _assert_same_ids(ours, folder: str | Path, texts: list[str], **ref_kwargs) -> None:
    ref = AutoTokenizer.from_pretrained(str(folder), **ref_kwargs)
    for add_special_tokens in (True, False):
        expected = ref(texts, add_special_tokens=add_special_tokens)['input_ids']
        assert ours.encode_batch(texts, add_special_tokens) == expected, add_special_tokens
    assert (ours.eos_token, ours.eos_token_id) == (ref.eos_token, ref.eos_token_id)


@pytest.fixture(scope='module')
def gpt2_style_json(corpus_docs: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GPT-2-style byte-level BPE (tokenizer.json only) whose pre-tokenizer adds a prefix space."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    bpe.train_from_iterator(corpus_docs[:40], trainer)
    path = tmp_path_factory.mktemp('gpt2') / 'tokenizer.json'
    bpe.save(str(path))
    return path


def _folder(tmp_path: Path, tokenizer_json: Path, config: dict, special_map: dict | None = None) -> Path:
    folder = tmp_path / 'tok'
    folder.mkdir()
    shutil.copy(tokenizer_json, folder / 'tokenizer.json')
    (folder / 'tokenizer_config.json').write_text(json.dumps(config))
    if special_map is not None:
        (folder / 'special_tokens_map.json').write_text(json.dumps(special_map))
    return folder


def _added_tokens_decoder(tokenizer_json: Path) -> dict:
    tokens = json.loads(tokenizer_json.read_text())['added_tokens']
    return {str(t['id']): {k: v for k, v in t.items() if k != 'id'} for t in tokens}


def test_trained_fixture_tokenizer(tokenizer_dir: str, corpus_docs: list[str]) -> None:
    """The tokenizer the data tests use (`llmfoundry tokenizer train`, PreTrainedTokenizerFast)."""
    ours = load_tokenizer(tokenizer_dir, {'model_max_length': 10})  # no truncation, as in tokenizer(text)
    assert isinstance(ours, FastTokenizer)
    _assert_same_ids(ours, tokenizer_dir, _texts(corpus_docs))


@pytest.mark.parametrize('kwargs', [{}, {'add_prefix_space': True}])
def test_gpt2_class_legacy_config(kwargs: dict, gpt2_style_json: Path, corpus_docs: list[str], tmp_path: Path) -> None:
    """GPT2Tokenizer config without added_tokens_decoder (special_tokens_map.json): transformers turns the
    pre-tokenizer's add_prefix_space off unless asked; the class's <|endoftext|> defaults."""
    folder = _folder(tmp_path, gpt2_style_json, {'tokenizer_class': 'GPT2Tokenizer', 'model_max_length': 1024},
                     {'bos_token': EOT, 'eos_token': EOT, 'unk_token': EOT})  # fmt: skip
    ours = load_tokenizer(str(folder), kwargs)
    assert isinstance(ours, FastTokenizer)
    _assert_same_ids(ours, folder, _texts(corpus_docs), **kwargs)
    assert ours.encode_batch(['hello'], False) != load_tokenizer(str(folder), {
        'add_prefix_space': not kwargs}).encode_batch(['hello'], False)  # fmt: skip


def test_gpt_neox_class_adds_bos_and_eos(gpt2_style_json: Path, corpus_docs: list[str], tmp_path: Path) -> None:
    config = {'tokenizer_class': 'GPTNeoXTokenizer', 'add_bos_token': True, 'add_eos_token': True,
              'added_tokens_decoder': _added_tokens_decoder(gpt2_style_json)}  # fmt: skip
    folder = _folder(tmp_path, gpt2_style_json, config)
    ours = load_tokenizer(str(folder))
    assert isinstance(ours, FastTokenizer)
    _assert_same_ids(ours, folder, _texts(corpus_docs))
    eot = ours.eos_token_id
    assert ours.encode_batch(['', 'hi'])[0] == [eot, eot] and ours.encode_batch(['hi'], False)[0][0] != eot


def test_template_post_processor_and_truncation_in_tokenizer_json(
    gpt2_style_json: Path, corpus_docs: list[str], tmp_path: Path
) -> None:
    """BOS from tokenizer.json's own template is kept; its truncation is not applied (transformers turns it off)."""
    bpe = Tokenizer.from_file(str(gpt2_style_json))
    bpe.post_processor = processors.TemplateProcessing(single=f'{EOT} $A', special_tokens=[(EOT, 0)])
    bpe.enable_truncation(max_length=8)
    source = tmp_path / 'tokenizer.json'
    bpe.save(str(source))
    config = {'tokenizer_class': 'PreTrainedTokenizerFast', 'eos_token': EOT,
              'added_tokens_decoder': _added_tokens_decoder(source)}  # fmt: skip
    folder = _folder(tmp_path, source, config)
    ours = load_tokenizer(str(folder))
    assert isinstance(ours, FastTokenizer)
    _assert_same_ids(ours, folder, _texts(corpus_docs))
    assert ours.encode_batch(['x' * 3000])[0][0] == 0 and len(ours.encode_batch(['x' * 3000])[0]) > 8


def test_hub_cache_entry(tokenizer_dir: str, corpus_docs: list[str], tmp_path: Path) -> None:
    cache = tmp_path / 'hub'
    repo = cache / 'models--acme--tiny'
    shutil.copytree(tokenizer_dir, repo / 'snapshots' / 'abc123')
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text('abc123')
    ours = load_tokenizer('acme/tiny', {'cache_dir': str(cache)})
    assert isinstance(ours, FastTokenizer)
    _assert_same_ids(ours, 'acme/tiny', _texts(corpus_docs), cache_dir=str(cache), local_files_only=True)


def test_falls_back_to_transformers_when_it_would_differ(
    gpt2_style_json: Path, corpus_docs: list[str], tmp_path: Path
) -> None:
    """A special token tokenizer.json lacks (transformers adds it), and a folder without tokenizer.json
    (vocab.json + merges.txt): transformers loads them, and the ids are still transformers' ids."""
    config = {'tokenizer_class': 'PreTrainedTokenizerFast', 'eos_token': EOT, 'additional_special_tokens': ['<sep>'],
              'added_tokens_decoder': _added_tokens_decoder(gpt2_style_json)}  # fmt: skip
    folder = _folder(tmp_path, gpt2_style_json, config)
    ours = load_tokenizer(str(folder))
    assert isinstance(ours, TransformersTokenizer)
    texts = [*_texts(corpus_docs), 'a<sep>b']
    _assert_same_ids(ours, folder, texts)
    assert len(ours.encode_batch(['<sep>'], False)[0]) == 1

    slow = tmp_path / 'slow'
    slow.mkdir()
    Tokenizer.from_file(str(gpt2_style_json)).model.save(str(slow))  # vocab.json, merges.txt
    (slow / 'tokenizer_config.json').write_text(json.dumps({'tokenizer_class': 'GPT2Tokenizer'}))
    ours = load_tokenizer(str(slow))
    assert isinstance(ours, TransformersTokenizer)
    _assert_same_ids(ours, slow, texts)


@pytest.mark.parametrize(
    ('config', 'kwargs'),
    [
        ({'tokenizer_class': 'PreTrainedTokenizerFast', 'auto_map': {'AutoTokenizer': ['x.Tok', None]}}, {}),
        ({'tokenizer_class': 'LlamaTokenizer'}, {}),
        ({'tokenizer_class': 'PreTrainedTokenizerFast'}, {'use_fast': False}),
        ({'tokenizer_class': 'PreTrainedTokenizerFast'}, {'trust_remote_code': True}),
    ],
)
def test_needs_transformers(config: dict, kwargs: dict, gpt2_style_json: Path, tmp_path: Path) -> None:
    assert load_fast(str(_folder(tmp_path, gpt2_style_json, config)), kwargs) is None


def test_added_token_with_other_flags_falls_back(gpt2_style_json: Path, tmp_path: Path) -> None:
    decoder = _added_tokens_decoder(gpt2_style_json)
    decoder['0'] = {**decoder['0'], 'lstrip': True}
    config = {'tokenizer_class': 'PreTrainedTokenizerFast', 'added_tokens_decoder': decoder}
    assert load_fast(str(_folder(tmp_path, gpt2_style_json, config)), {}) is None


def test_eos_required_and_taken_from_kwargs(gpt2_style_json: Path, corpus_docs: list[str], tmp_path: Path) -> None:
    config = {
        'tokenizer_class': 'PreTrainedTokenizerFast',
        'added_tokens_decoder': _added_tokens_decoder(gpt2_style_json),
    }
    folder = _folder(tmp_path, gpt2_style_json, config)
    with pytest.raises(ValueError, match="tokenizer '.*' has no EOS token"):
        load_tokenizer(str(folder))
    ours = load_tokenizer(str(folder), {'eos_token': EOT})
    assert isinstance(ours, FastTokenizer)
    _assert_same_ids(ours, folder, _texts(corpus_docs), eos_token=EOT)



def test_a_folder_on_object_storage_is_downloaded_once(
    gpt2_style_json: Path, corpus_docs: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both paths read one private copy: tokenizers alone, and (a special token tokenizer.json lacks) transformers."""
    downloads = []
    download = storage.download_folder
    monkeypatch.setattr(storage, 'download_folder',
                        lambda url, *args, **kwargs: (downloads.append(url), download(url, *args, **kwargs)))
    fast_config = {'tokenizer_class': 'PreTrainedTokenizerFast', 'eos_token': EOT,
                   'added_tokens_decoder': _added_tokens_decoder(gpt2_style_json)}  # fmt: skip
    for config, expected in ((fast_config, FastTokenizer),
                             ({**fast_config, 'additional_special_tokens': ['<sep>']}, TransformersTokenizer)):
        (tmp_path / expected.__name__).mkdir()
        folder = _folder(tmp_path / expected.__name__, gpt2_style_json, config)
        url = f'memory://tokenizers-{uuid.uuid4().hex[:12]}/{expected.__name__}'
        storage.upload_folder(folder, url, replace=False, last='tokenizer_config.json')
        downloads.clear()
        ours = load_tokenizer(url)
        assert isinstance(ours, expected) and downloads == [url]
        _assert_same_ids(ours, folder, _texts(corpus_docs))

PROBE = """
import json, sys
from llmfoundry import storage
from llmfoundry.data.fast_tokenizer import load_tokenizer
tok = load_tokenizer(sys.argv[1])
heavy = sorted(m for m in ('torch', 'transformers', 'streaming') if m in sys.modules)
ids = tok.encode_batch(['hello world', ''], True)
print(json.dumps({'ids': ids, 'eos': tok.eos_token_id, 'type': type(tok).__name__, 'heavy': heavy}))
"""


def test_fresh_interpreter_imports_no_transformers(tokenizer_dir: str) -> None:
    result = subprocess.run([sys.executable, '-c', PROBE, tokenizer_dir], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    ref = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert out == {'ids': ref(['hello world', ''])['input_ids'], 'eos': ref.eos_token_id, 'type': 'FastTokenizer',
                   'heavy': []}  # fmt: skip
