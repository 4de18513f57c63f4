"""Run as a script: load exported remote-code folders with transformers alone, llmfoundry unimportable.

Usage: python remote_loader.py JOB.json, where the job names the folders, the input ids file and the output
file. For each folder it records the logits and 32 greedy tokens (after scaling the output head by the
job's factor, as the caller does to its own model); it also records the error raised when the first
folder is loaded without trust_remote_code.
"""

from __future__ import annotations

import importlib.abc
import json
import sys


class _BlockLlmfoundry(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'llmfoundry':
            raise ModuleNotFoundError(f'{name} is blocked in this process')
        return None


def main(job_path: str) -> None:
    sys.meta_path.insert(0, _BlockLlmfoundry())
    import torch
    from transformers import AutoModelForCausalLM

    try:
        import llmfoundry  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit('llmfoundry is importable: the check would prove nothing')
    torch.set_num_threads(1)
    with open(job_path) as f:
        job = json.load(f)
    ids = torch.load(job['ids'])
    results = {}
    for name, folder in job['folders'].items():
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
        with torch.no_grad():
            logits = model(input_ids=ids).logits
            (model.get_output_embeddings() or model.get_input_embeddings()).weight.mul_(job['head_scale'])
            prompt = ids[:, :8]
            tokens = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=32,
                                    do_sample=False, use_cache=True, pad_token_id=0)[:, 8:]
        results[name] = {'logits': logits, 'tokens': tokens, 'module': type(model).__module__}
    try:
        AutoModelForCausalLM.from_pretrained(next(iter(job['folders'].values())))
        results['untrusted_error'] = None
    except ValueError as exc:
        results['untrusted_error'] = str(exc)
    torch.save(results, job['out'])


if __name__ == '__main__':
    main(sys.argv[1])
