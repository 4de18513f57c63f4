"""Thin wrapper: the same as `llmfoundry data-prep convert_dataset_json ...`."""

import sys

from llmfoundry.data.prep.cli import main

if __name__ == '__main__':
    sys.exit(main(['convert_dataset_json', *sys.argv[1:]]))
