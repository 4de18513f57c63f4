"""Convert text, JSON Lines or Hugging Face datasets into MDS shards (local or s3://)."""
