"""In-context-learning evaluation with llm-foundry's task types, metrics and eval gauntlet (docs/EVAL.md).

Layer 4: it builds on models/, data/ and train/ (process group, checkpoint loading) and nothing builds on it
except the `llmfoundry eval` command.
"""
