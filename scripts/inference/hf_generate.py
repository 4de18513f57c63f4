"""llm-foundry's scripts/inference/hf_generate.py with the same flags: the same as `llmfoundry generate`."""

import sys

from llmfoundry.inference.generate_cli import main

if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
