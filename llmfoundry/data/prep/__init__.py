"""Convert text, JSON Lines or Hugging Face datasets into MDS shards (a local folder or object storage)."""
