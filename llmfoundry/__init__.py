"""llmfoundry: train, finetune, evaluate and export MPT-family language models."""
from llmfoundry.third_party_logs import quiet_known_notices

__version__ = "0.1.0"

quiet_known_notices()
