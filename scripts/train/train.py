"""Train from an llm-foundry style YAML: python scripts/train/train.py YAML [key=value ...] (or under torchrun)."""

import sys

from llmfoundry.train.entry import main

if __name__ == '__main__':
    sys.exit(main())
