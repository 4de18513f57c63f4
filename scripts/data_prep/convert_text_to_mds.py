"""Thin wrapper: the same as `llmfoundry data-prep convert_text_to_mds ...`."""

import sys

from llmfoundry.data.prep.cli import main

if __name__ == '__main__':
    sys.exit(main(['convert_text_to_mds', *sys.argv[1:]]))
