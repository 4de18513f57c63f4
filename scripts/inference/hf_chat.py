"""llm-foundry's scripts/inference/hf_chat.py with the same flags: the same as `llmfoundry chat`."""

import sys

from llmfoundry.inference.chat_cli import main

if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
