"""`--dry-run` on our yamls/ and on one fixture per llm-foundry 0.22 recipe shape (tests/fixtures/llmfoundry-yamls):
each is accepted, or refused with the message that names the missing feature (never as an unknown key).

Model folders (tiny GPT-2, Llama, Mistral and DBRX written with transformers' config classes), the MDS data and the
tokenizer are made here; finetuning data is the prompt/response and chat JSON Lines shipped in yamls/finetune/data
(and a finetuning MDS converted from it). The YAMLs' own paths are placeholders that the overrides replace.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from omegaconf import OmegaConf

from llmfoundry.data.prep.cli import main as data_prep
from llmfoundry.train.entry import main as train

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / 'tests' / 'fixtures' / 'llmfoundry-yamls'
OURS = sorted((REPO / 'yamls' / 'pretrain').glob('*.yaml'))
FINETUNE_RECIPES = sorted((REPO / 'yamls' / 'finetune').glob('mpt-7b-*.yaml'))
SHIPPED = REPO / 'yamls' / 'finetune' / 'data'

MOE = r'mixture-of-experts \(MoE\) models are not supported'
DBRX = r'model\.pretrained_model_name_or_path=.*tiny-dbrx \(a dbrx model\): ' + MOE
# fixture -> (the model folder it uses, None when accepted or the refusal's pattern)
CASES = {
    'mpt-125m.yaml': (None, None),
    'mpt-7b.yaml': (None, None),
    'pretrain-mpt-small-cpu.yaml': (None, None),
    'pretrain-gpt2-small.yaml': ('gpt2', None),
    'pretrain-llama.yaml': ('llama', None),
    'finetune-mistral-domain-adapt.yaml': ('mistral', None),
    'pretrain-testing-moe.yaml': (None, r'model\.ffn_config\.ffn_type=mb_dmoe: ' + MOE),
    'pretrain-gpt-neo-125m-eval.yaml': ('gpt2', None),
    'finetune-1b-local-data-sft.yaml': (None, None),
    'finetune-mpt-7b-dolly-sft.yaml': (None, None),
    'finetune-llama-3-8b-dolly-sft.yaml': ('llama', None),
    'finetune-gpt2-arc-easy-cpu-streaming.yaml': ('gpt2', None),
    'finetune-llama-lora.yaml': ('llama', None),
    'finetune-dbrx-full-ft.yaml': ('dbrx', DBRX),
    'finetune-dbrx-lora-ft.yaml': ('dbrx', DBRX),
}
# The finetuning fixtures' data: their local data_dir, or their hub dataset replaced by local JSON Lines
# (prompt/response, split train and test), or their MDS streams by a finetuning MDS.
LOADERS = ('train_loader', 'eval_loader')
LOCAL_JSONL = [f'{loader}.dataset.hf_kwargs.data_dir={SHIPPED / "instruct"}' for loader in LOADERS]
HUB_TO_JSONL = [f'{loader}.dataset.hf_name=json' for loader in LOADERS] + LOCAL_JSONL
FINETUNING_DATA = {
    'finetune-1b-local-data-sft.yaml': LOCAL_JSONL,
    'finetune-mpt-7b-dolly-sft.yaml': HUB_TO_JSONL,
    'finetune-llama-3-8b-dolly-sft.yaml': HUB_TO_JSONL,
    'finetune-llama-lora.yaml': HUB_TO_JSONL,
}
FINETUNING_MDS_CASE = 'finetune-gpt2-arc-easy-cpu-streaming.yaml'  # variables.data_local is the finetuning MDS
ICL_CASE = 'pretrain-gpt-neo-125m-eval.yaml'  # its icl_tasks read ./local-data/piqa.jsonl
# Small enough for a dry run's first batch on the tiny corpus, whatever the YAML's production batch.
SMALL_BATCH = ['global_train_batch_size=4', 'device_train_microbatch_size=2']
HF_CONFIGS = {
    'gpt2': lambda: transformers.GPT2Config(vocab_size=1024, n_positions=128, n_embd=16, n_layer=2, n_head=2),
    'llama': lambda: transformers.LlamaConfig(vocab_size=1024, hidden_size=16, intermediate_size=32,
                                              num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                              max_position_embeddings=128),
    'mistral': lambda: transformers.MistralConfig(vocab_size=1024, hidden_size=16, intermediate_size=32,
                                                  num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                                  max_position_embeddings=128),
    'dbrx': lambda: transformers.DbrxConfig(vocab_size=1024, d_model=16, n_heads=2, n_layers=2, max_seq_len=128,
                                            ffn_config={'ffn_hidden_size': 32, 'moe_num_experts': 4, 'moe_top_k': 2}),
}


def test_every_fixture_has_a_case():
    assert sorted(CASES) == sorted(path.name for path in FIXTURES.glob('*.yaml'))


@pytest.fixture(scope='module')
def mds(corpus_dir: Path, tokenizer_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """{train,val}/ MDS folders of 64-token samples, written by our own data-prep command."""
    out = tmp_path_factory.mktemp('yamls-mds')
    for split in ('train', 'val'):
        assert data_prep(['convert_text_to_mds', '--input_folder', str(corpus_dir), '--output_folder',
                          str(out / split), '--concat_tokens', '64', '--tokenizer', tokenizer_dir]) == 0
    return out


@pytest.fixture(scope='module')
def finetuning_mds(tokenizer_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """out/train/: llm-foundry's finetuning MDS layout, written by our converter from the shipped instruct data."""
    out = tmp_path_factory.mktemp('finetuning-mds')
    assert data_prep(['convert_finetuning_dataset', '--dataset', 'json', '--splits', 'train', '--data_files',
                      str(SHIPPED / 'instruct' / 'train.jsonl'), '--out_root', str(out), '--tokenizer', tokenizer_dir,
                      '--max_seq_len', '128', '--skip-preprocessing']) == 0
    return out


@pytest.fixture(scope='module')
def hf_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny local folder per architecture: config.json and random weights (DBRX: the config is all a refusal
    reads)."""
    root = tmp_path_factory.mktemp('hf-models')
    folders = {}
    for name, make_config in HF_CONFIGS.items():
        folders[name] = root / f'tiny-{name}'
        config = make_config()
        if name == 'dbrx':
            config.save_pretrained(folders[name])
            continue
        torch.manual_seed(0)
        transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folders[name])
    return folders


def dry_run(capsys, yaml: Path, overrides: list[str]) -> tuple[int, str, str]:
    code = train([str(yaml), *overrides, '--dry-run'])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize('name', sorted(CASES))
def test_llmfoundry_recipe_shape(name, capsys, mds, finetuning_mds, tokenizer_dir, hf_folders, tmp_path,
                                 monkeypatch):
    folder, refusal = CASES[name]
    monkeypatch.chdir(tmp_path)  # the YAMLs' relative placeholders resolve here, and nothing is written
    data = finetuning_mds if name == FINETUNING_MDS_CASE else mds
    if name == ICL_CASE:
        (tmp_path / 'local-data').mkdir()
        (tmp_path / 'local-data' / 'piqa.jsonl').write_text('{"query": "q", "choices": ["a", "b"], "gold": 0}\n')
    overrides = [f'variables.data_local={data}', f'tokenizer.name={tokenizer_dir}', *SMALL_BATCH,
                 *FINETUNING_DATA.get(name, [])]
    if folder:
        overrides.append(f'variables.model_name_or_path={hf_folders[folder]}')
    code, out, err = dry_run(capsys, FIXTURES / name, overrides)
    if refusal is None:
        assert code == 0, err
        assert out.splitlines()[-1] == 'dry run OK: nothing was trained or written.'
    else:
        assert code == 2, out
        assert err.startswith('Config error: ')
        assert err.count('\n') == 1  # one line
        assert re.search(refusal, err), err


@pytest.mark.parametrize('yaml', OURS, ids=[path.name for path in OURS])
def test_our_pretraining_yamls_pass_a_dry_run(yaml, capsys, mds, tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides = [f'variables.data_local={mds}', f'tokenizer.name={tokenizer_dir}', *SMALL_BATCH]
    code, out, err = dry_run(capsys, yaml, overrides)
    assert code == 0, err
    assert out.splitlines()[-1] == 'dry run OK: nothing was trained or written.'


# Each recipe as shipped (MPT-7B on the meta device, its own max_seq_len) on local data: the shipped JSON Lines for
# instruct and chat, the text MDS for storywriter; load_path unset, since a dry run reads no weights anyway.
RECIPE_DATA = {
    'mpt-7b-instruct.yaml': ['variables.dataset=json', *LOCAL_JSONL],
    'mpt-7b-chat.yaml': ['variables.dataset=json', f'train_loader.dataset.hf_kwargs.data_dir={SHIPPED / "chat"}'],
    'mpt-7b-storywriter.yaml': [],
}


def test_every_finetuning_recipe_has_its_data():
    assert sorted(RECIPE_DATA) == [path.name for path in FINETUNE_RECIPES]


def test_a_dataset_smaller_than_one_batch_is_a_config_error(capsys, tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # 40 short examples: fewer than the recipe's 64 rows per batch
    code, _, err = dry_run(capsys, REPO / 'yamls' / 'finetune' / 'mpt-7b-instruct.yaml',
                           [f'tokenizer.name={tokenizer_dir}', 'variables.load_path=null', 'variables.dataset=json',
                            *LOCAL_JSONL, 'device_train_microbatch_size=1'])
    assert code == 2
    assert err.splitlines()[-1] == ('Config error: train_loader yields no batch of 64 rows: the dataset is smaller '
                                    'than one batch (after packing, and with drop_last); use more data or a smaller '
                                    'global_train_batch_size')


def test_missing_finetuning_data_fails_before_anything_is_built(capsys, tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = dry_run(capsys, REPO / 'yamls' / 'finetune' / 'mpt-tiny-instruct-cpu.yaml',
                             [f'variables.tokenizer={tokenizer_dir}', 'variables.data_dir=my-data'])
    assert code == 2 and 'model:' not in out
    assert err == "Config error: train_loader.dataset.hf_kwargs.data_dir='my-data': ./my-data is not a folder\n"


def test_packing_without_sequence_id_is_accepted_with_one_warning(capsys, caplog, tokenizer_dir, tmp_path,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = dry_run(capsys, REPO / 'yamls' / 'finetune' / 'mpt-tiny-chat-cpu.yaml',
                           [f'variables.tokenizer={tokenizer_dir}', f'variables.data_dir={SHIPPED / "chat"}',
                            'model.attn_config.attn_uses_sequence_id=false'])
    assert code == 0, err
    warnings = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING' and 'packing' in r.getMessage()]
    assert warnings == ["train_loader.dataset.packing_ratio='auto' packs several examples per row, but "
                        'model.attn_config.attn_uses_sequence_id is false, so packed examples attend to each other '
                        '(llm-foundry trains this way too); set model.attn_config.attn_uses_sequence_id: true to '
                        'keep them apart']


@pytest.mark.parametrize('yaml', FINETUNE_RECIPES, ids=[path.name for path in FINETUNE_RECIPES])
def test_our_finetuning_recipes_pass_a_dry_run(yaml, capsys, mds, tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides = [f'variables.data_local={mds}', f'tokenizer.name={tokenizer_dir}', 'variables.load_path=null',
                 'global_train_batch_size=1', 'device_train_microbatch_size=1', *RECIPE_DATA[yaml.name]]
    code, out, err = dry_run(capsys, yaml, overrides)
    assert code == 0, err
    assert f'at max_seq_len {OmegaConf.load(yaml).variables.max_seq_len}' in out
    assert out.splitlines()[-1] == 'dry run OK: nothing was trained or written.'


# Hugging Face shapes that train for two batches on 2 ranks: the pretraining ones and one finetuning (SFT) one.
HF_TRAINED = ('pretrain-gpt2-small.yaml', 'pretrain-llama.yaml', 'finetune-mistral-domain-adapt.yaml',
              'finetune-llama-3-8b-dolly-sft.yaml')
SEQ_LEN = {'finetune-llama-3-8b-dolly-sft.yaml': 128}  # the shipped instructions need more than 64 tokens each
# The SFT shape runs long enough, without the recipe's 100-batch warmup, to see its loss fall.
BATCHES = {'finetune-llama-3-8b-dolly-sft.yaml': 8}
FAST_LEARNING = ['scheduler.t_warmup=0ba', 'optimizer.lr=0.01']


@pytest.mark.slow
@pytest.mark.parametrize('name', HF_TRAINED)
def test_hugging_face_shapes_train_on_two_ranks_under_fsdp(name, mds, tokenizer_dir, hf_folders, tmp_path):
    """Two batches (the SFT shape: eight, and its loss falls) on 2 gloo ranks with the YAML's fsdp_config: the
    sharding plan is logged (verbose), and the run ends with an evaluation."""
    folder, batches = CASES[name][0], BATCHES.get(name, 2)
    command = [sys.executable, '-m', 'llmfoundry.cli', 'train', str(FIXTURES / name), '--nproc', '2',
               f'variables.data_local={mds}', f'tokenizer.name={tokenizer_dir}', f'variables.model_name_or_path='
               f'{hf_folders[folder]}', *SMALL_BATCH, *FINETUNING_DATA.get(name, []), f'max_duration={batches}ba',
               *(FAST_LEARNING if batches > 2 else []),
               'eval_subset_num_batches=1',
               'precision=fp32', 'fsdp_config.verbose=true', f'variables.max_seq_len={SEQ_LEN.get(name, 64)}',
               'callbacks=null',
               'train_loader.num_workers=0', 'eval_loader.num_workers=0', 'run_name=hf-fsdp',
               f'save_folder={tmp_path}/checkpoints']
    result = subprocess.run(command, cwd=tmp_path, env={**os.environ, 'PYTHONUNBUFFERED': '1'}, capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    # the root and each of the 2 layers
    assert 'sharding plan: FULL_SHARD, mixed_precision PURE, cpu_offload False; 3 fully_shard units' in result.stderr
    run_folder = tmp_path / 'checkpoints'
    records = [json.loads(line) for line in (run_folder / 'metrics.jsonl').read_text().splitlines()]
    evaluated = [record['batch'] for record in records if 'metrics/eval/LanguageCrossEntropy' in record]
    assert evaluated[-1] == batches and len(evaluated) == len(set(evaluated))  # at the end, never twice
    assert list(run_folder.glob('*/.complete'))  # the checkpoint at the end of training
    if batches > 2:
        losses = [record['loss/train/total'] for record in records if 'loss/train/total' in record]
        assert len(losses) == batches and sum(losses[-2:]) < sum(losses[:2]) - 0.5, losses
