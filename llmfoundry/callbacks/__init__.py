"""Training callbacks, each registered under its YAML name (llm-foundry's) in llmfoundry/registry.py."""

from .early_stopper import EarlyStopper
from .generate import Generate
from .hf_checkpointer import HuggingFaceCheckpointer
from .loss_spike import LossSpike
from .lr_monitor import LRMonitor
from .memory_monitor import MemoryMonitor
from .nan_monitor import NaNMonitor
from .optimizer_monitor import OptimizerMonitor
from .runtime_estimator import RuntimeEstimator
from .scheduled_gc import ScheduledGarbageCollector
from .speed_monitor import SpeedMonitor

__all__ = ['EarlyStopper', 'Generate', 'HuggingFaceCheckpointer', 'LRMonitor', 'LossSpike', 'MemoryMonitor',
           'NaNMonitor', 'OptimizerMonitor', 'RuntimeEstimator', 'ScheduledGarbageCollector', 'SpeedMonitor']
