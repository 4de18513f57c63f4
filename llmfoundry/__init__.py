"""llmfoundry: train, finetune, evaluate and export MPT-family language models."""
__version__ = "0.1.0"
