"""Thin wrapper: the same as `llmfoundry data-prep convert_dataset_hf ...`."""

import sys

from llmfoundry.data.prep.cli import main

if __name__ == '__main__':
    sys.exit(main(['convert_dataset_hf', *sys.argv[1:]]))
