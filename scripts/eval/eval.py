"""llm-foundry's `python scripts/eval/eval.py YAML [key=value ...]`, also under torchrun or `llmfoundry eval`."""

import sys

from llmfoundry.eval.entry import main

if __name__ == '__main__':
    sys.exit(main())
