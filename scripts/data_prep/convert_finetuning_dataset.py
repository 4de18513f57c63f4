"""Thin wrapper: the same as `llmfoundry data-prep convert_finetuning_dataset ...`."""

import sys

from llmfoundry.data.prep.finetuning import main

if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
