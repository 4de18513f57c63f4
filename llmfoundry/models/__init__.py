"""Models: the MPT family and adapters for other Hugging Face causal LMs."""
