"""Generation and chat with our checkpoints or Hugging Face folders: `llmfoundry generate` and `llmfoundry chat`.

options.py (argparse only, so `--help` stays fast), loading.py (model and tokenizer from a checkpoint or folder),
generation.py (left-padded batches, stop tokens, tokens/s), chat.py (the conversation and its template).
"""
