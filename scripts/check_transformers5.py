"""Helper of check_transformers5.sh: exported folders must give our logits under transformers 5.

  python check_transformers5.py export DIR   (main venv) tiny native-MPT, Llama and remote-code exports,
                                             with the expected logits and greedy tokens, into DIR
  python check_transformers5.py check DIR    (transformers-5 venv, llmfoundry made unimportable) load each
                                             folder with AutoModelForCausalLM and compare
"""

from __future__ import annotations

import importlib.abc
import sys
from pathlib import Path

TOL = 1e-5
PROMPT_LEN, NEW_TOKENS = 8, 32
HEAD_SCALE = 4.0  # both sides scale the output head before decoding: wide top-2 gaps, no near-ties
# name -> (expected format, MPTConfig kwargs)
CASES = {
    'native_mpt': ('mpt', {'d_model': 48, 'n_heads': 6, 'no_bias': True, 'attn_config': {'alibi': True}}),
    'llama': ('llama', {
        'd_model': 48, 'n_heads': 6, 'no_bias': True, 'norm_type': 'rmsnorm', 'tie_word_embeddings': False,
        'attn_config': {'rope': True, 'rope_impl': 'hf', 'attn_type': 'grouped_query_attention', 'kv_n_heads': 2,
                        'rope_hf_config': {'type': 'llama3', 'factor': 8.0, 'low_freq_factor': 1.0,
                                           'high_freq_factor': 4.0, 'original_max_position_embeddings': 16}},
        'ffn_config': {'ffn_type': 'mptglu', 'ffn_act_fn': {'name': 'silu'}},
    }),
    'remote_code': ('remote_code', {
        'd_model': 48, 'n_heads': 6, 'no_bias': False, 'logit_scale': 0.5, 'norm_type': 'rmsnorm',
        'attn_config': {'rope': True, 'qk_ln': True, 'attn_type': 'grouped_query_attention', 'kv_n_heads': 3},
        'ffn_config': {'ffn_type': 'mptglu'},
    }),
}
COMMON = {'n_layers': 2, 'vocab_size': 128, 'max_seq_len': 64}


def _greedy(model, ids):
    """32 greedy tokens with a KV cache, after sharpening the head (modifies the model)."""
    import torch

    (model.get_output_embeddings() or model.get_input_embeddings()).weight.mul_(HEAD_SCALE)
    prompt = ids[:, :PROMPT_LEN]
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW_TOKENS, do_sample=False,
                         pad_token_id=0)
    return out[:, PROMPT_LEN:]


def export(out: Path) -> None:
    import torch

    from llmfoundry.export import export_to_hf
    from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM

    torch.set_num_threads(1)
    ids = torch.randint(0, COMMON['vocab_size'], (2, 12), generator=torch.Generator().manual_seed(0))
    expected = {'ids': ids}
    for seed, (name, (fmt, kwargs)) in enumerate(CASES.items()):
        torch.manual_seed(seed)
        attn = {'attn_impl': 'torch', **kwargs.pop('attn_config')}
        model = MPTForCausalLM(MPTConfig(**COMMON, **kwargs, attn_config=attn)).eval()
        written = export_to_hf(model, out / name)
        assert written == fmt, f'{name}: exported as {written}, expected {fmt}'
        with torch.no_grad():
            expected[name] = {'logits': model(ids).logits, 'tokens': _greedy(model, ids)}
    torch.save(expected, out / 'expected.pt')


class _BlockLlmfoundry(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'llmfoundry':
            raise ModuleNotFoundError(f'{name} is blocked: folders must load without llmfoundry')
        return None


def _compare(folder: Path, trust_remote_code: bool, expected: dict, ids) -> tuple[float, bool, str]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, trust_remote_code=trust_remote_code)
    with torch.no_grad():
        diff = (model.eval()(input_ids=ids).logits - expected['logits']).abs().max().item()
        tokens = _greedy(model, ids)
    return diff, torch.equal(tokens, expected['tokens']), type(model).__name__


def check(folders: Path) -> int:
    sys.meta_path.insert(0, _BlockLlmfoundry())
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    print(f'transformers {transformers.__version__}, torch {torch.__version__}')
    expected = torch.load(folders / 'expected.pt')
    ids = expected['ids']
    failures = 0
    for name, (fmt, _) in CASES.items():
        try:
            diff, same_tokens, cls = _compare(folders / name, fmt == 'remote_code', expected[name], ids)
        except Exception as exc:  # report every case, not just the first failure
            print(f'FAIL {name:12} {type(exc).__name__}: {exc}')
            failures += 1
            continue
        ok = diff <= TOL and same_tokens
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name:12} {cls:16} max|dlogits|={diff:.2e} "
              f'greedy tokens {"equal" if same_tokens else "DIFFER"}')
    try:
        AutoModelForCausalLM.from_pretrained(folders / 'remote_code', trust_remote_code=False)
        print('FAIL remote_code loaded without trust_remote_code')
        failures += 1
    except ValueError:
        print('ok   remote_code refuses to load without trust_remote_code')
    return int(failures > 0)


if __name__ == '__main__':
    mode, folder = sys.argv[1], Path(sys.argv[2])
    if mode == 'export':
        export(folder)
    else:
        sys.exit(check(folder))
