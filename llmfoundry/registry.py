"""Every named registry: how a name in a YAML (a model, loader, optimizer, scheduler, callback, logger, ...) becomes
the code that builds it.

An entry is an import string, 'package.module:attribute', imported the first time its name is looked up. So this
module sits at the bottom of the package and imports none of what it lists, and built-in entries and plugins are
added the same way: the built-ins are declared below, other packages declare entry points in the group
`llmfoundry.<registry name>`, e.g. in their pyproject:

    [project.entry-points."llmfoundry.callbacks"]
    my_callback = "my_pkg.callbacks:MyCallback"

Code can also add an object directly with `register` (e.g. a Python file listed in the YAML's `code_paths`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from llmfoundry.config.validation import ConfigError, check_keys, close_matches, did_you_mean

if TYPE_CHECKING:
    from torch import nn
    from torch.optim import Optimizer

    from llmfoundry.interfaces import Callback, LoggerDestination

T = TypeVar('T')
B = TypeVar('B', bound=Callable[..., Any])


class Registry(Generic[T]):
    """Names -> builders of T; `builtins` maps names to import strings resolved on first lookup."""

    def __init__(self, name: str, builtins: Mapping[str, str] | None = None) -> None:
        self.name = name
        self._entries: dict[str, Callable[..., T] | EntryPoint] = {
            key: EntryPoint(key, target, self.group) for key, target in (builtins or {}).items()}
        self._plugins_loaded = False

    @property
    def group(self) -> str:
        """The entry-point group plugins add entries to."""
        return f'llmfoundry.{self.name}'

    def register(self, name: str) -> Callable[[B], B]:
        """Decorator adding a builder under `name`; a name can be registered once."""
        def add(builder: B) -> B:
            if name in self._entries:
                raise ValueError(f"{self.name} registry: '{name}' is already registered.")
            self._entries[name] = builder
            return builder

        return add

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def get(self, name: Any, path: str, as_key: bool = False) -> Callable[..., T]:
        """The builder registered as `name`. `path` is where the config wrote the name: the value of a `name:` key
        (path 'optimizer.name'), or with `as_key` a key of a section (path 'callbacks.speed_monitor'). An unknown
        name is a ConfigError that says where, the closest registered names and all of them."""
        self._load_plugins()
        entry = self._entries.get(name) if isinstance(name, str) else None
        if entry is None:
            written = f"key '{path}'" if as_key else f'{path}={name!r}'
            close = did_you_mean([f"'{match}'" for match in close_matches(str(name), self.names())])
            raise ConfigError(f"unknown {written}{close} (registered: {', '.join(self.names()) or 'none'}).")
        if isinstance(entry, EntryPoint):
            entry = self._entries[name] = entry.load()
        return entry

    def get_named(self, section: Any, path: str, default: str | None = None) -> tuple[str, Callable[..., T]]:
        """(name, builder) for a section that names its entry with a `name:` key (`default` when absent)."""
        if not isinstance(section, Mapping):
            raise ConfigError(f'{path} must be a mapping with a `name` key, got {section!r}.')
        name = section.get('name', default)
        if name is None:
            raise ConfigError(f"{path}.name is required (registered: {', '.join(self.names())}).")
        return name, self.get(name, f'{path}.name')

    def build(self, name: str, kwargs: dict[str, Any] | None, path: str, **extra: Any) -> T:
        """Build the entry that a section's key names (callbacks, loggers: path 'callbacks.speed_monitor') from the
        key's mapping of keyword arguments (checked against the builder's signature) and `extra`."""
        builder = self.get(name, path, as_key=True)
        kwargs = dict(kwargs or {})
        check_kwargs(builder, kwargs, path, exclude=set(extra))
        return builder(**extra, **kwargs)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for entry in entry_points(group=self.group):
            self._entries.setdefault(entry.name, entry)


def check_kwargs(
    builder: Callable[..., Any], kwargs: Mapping[str, Any], path: str, exclude: set[str] = frozenset()
) -> None:
    """Unknown keyword arguments are config errors naming the key and the valid ones."""
    parameters = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    valid = [n for n, p in parameters.items() if n not in exclude and n != 'self'
             and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    check_keys(kwargs, valid, path)


# `model:` -> (**section) -> nn.Module
models: Registry[nn.Module] = Registry('models', {
    'mpt_causal_lm': 'llmfoundry.models.builders:build_mpt_causal_lm',
    'hf_causal_lm': 'llmfoundry.models.hf_causal_lm:build_hf_causal_lm',
})
# `train_loader:`, `eval_loader:`, `eval_loaders:` -> (section, tokenizer, device batch size, path) -> loader
dataloaders: Registry[Any] = Registry('dataloaders', {
    'text': 'llmfoundry.data.text_loader:build_text_dataloader',
    'finetuning': 'llmfoundry.data.finetuning.loader:build_finetuning_dataloader',
})
# `optimizer:` -> (param_groups, **section) -> Optimizer
optimizers: Registry[Optimizer] = Registry('optimizers', {
    'decoupled_adamw': 'llmfoundry.optim.optimizers:DecoupledAdamW',
    'decoupled_lionw': 'llmfoundry.optim.optimizers:DecoupledLionW',
    'adamw': 'llmfoundry.optim.optimizers:torch_adamw',
})
# `scheduler:` -> a dataclass whose fields are the section's keys (llmfoundry.optim.schedulers)
schedulers: Registry[Any] = Registry('schedulers', {
    'constant_with_warmup': 'llmfoundry.optim.schedulers:ConstantWithWarmup',
    'cosine_with_warmup': 'llmfoundry.optim.schedulers:CosineWithWarmup',
    'linear_decay_with_warmup': 'llmfoundry.optim.schedulers:LinearWithWarmup',
    'inv_sqrt_with_warmup': 'llmfoundry.optim.schedulers:InverseSquareRootWithWarmup',
    'warmup_stable_decay': 'llmfoundry.optim.schedulers:WarmupStableDecay',
})
# `callbacks: {name: kwargs}` -> Callback
callbacks: Registry[Callback] = Registry('callbacks', {
    'early_stopper': 'llmfoundry.callbacks.early_stopper:EarlyStopper',
    'generate': 'llmfoundry.callbacks.generate:Generate',
    'hf_checkpointer': 'llmfoundry.callbacks.hf_checkpointer:HuggingFaceCheckpointer',
    'loss_spike': 'llmfoundry.callbacks.loss_spike:LossSpike',
    'lr_monitor': 'llmfoundry.callbacks.lr_monitor:LRMonitor',
    'memory_monitor': 'llmfoundry.callbacks.memory_monitor:MemoryMonitor',
    'nan_monitor': 'llmfoundry.callbacks.nan_monitor:NaNMonitor',
    'optimizer_monitor': 'llmfoundry.callbacks.optimizer_monitor:OptimizerMonitor',
    'runtime_estimator': 'llmfoundry.callbacks.runtime_estimator:RuntimeEstimator',
    'scheduled_gc': 'llmfoundry.callbacks.scheduled_gc:ScheduledGarbageCollector',
    'speed_monitor': 'llmfoundry.callbacks.speed_monitor:SpeedMonitor',
})
# `loggers: {name: kwargs}` -> (**kwargs, run_folder=, default_name=) -> LoggerDestination
loggers: Registry[LoggerDestination] = Registry('loggers', {
    'mlflow': 'llmfoundry.loggers.mlflow_logger:MLFlowLogger',
    'tensorboard': 'llmfoundry.loggers.tensorboard_logger:TensorBoardLogger',
    'wandb': 'llmfoundry.loggers.wandb_logger:WandBLogger',
})
# finetuning `dataset.preprocessing_fn` (or the dataset's name when unset) -> (example) -> prompt/response or messages
_PREPROCESSORS = 'llmfoundry.data.finetuning.preprocessors'
preprocessors: Registry[Any] = Registry('preprocessors', {
    'tatsu-lab/alpaca': f'{_PREPROCESSORS}:alpaca',
    'HuggingFaceH4/databricks_dolly_15k': f'{_PREPROCESSORS}:dolly',
    'bigscience/P3': f'{_PREPROCESSORS}:p3',
    'Muennighoff/P3': f'{_PREPROCESSORS}:muennighoff',
    'Muennighoff/flan': f'{_PREPROCESSORS}:muennighoff',
    'teknium/OpenHermes-2.5': f'{_PREPROCESSORS}:sharegpt',
    'math-ai/StackMathQA': f'{_PREPROCESSORS}:question_answer',
    'AI-MO/NuminaMath-CoT': f'{_PREPROCESSORS}:messages_only',
})
# ICL task types (llmfoundry/eval/tasks.py); 'question_answering' is llm-foundry's older name for generation.
icl_task_types: Registry[Any] = Registry('icl_task_types', {
    'language_modeling': 'llmfoundry.eval.tasks:LanguageModelingTask',
    'multiple_choice': 'llmfoundry.eval.tasks:MultipleChoiceTask',
    'schema': 'llmfoundry.eval.tasks:SchemaTask',
    'generation_task_with_answers': 'llmfoundry.eval.tasks:GenerationTask',
    'question_answering': 'llmfoundry.eval.tasks:GenerationTask',
    'code_evaluation': 'llmfoundry.eval.tasks:CodeEvalTask',
})
# What a training evaluation runs besides eval loaders, named by its top-level train YAML key (built when the key is
# set) -> (config: TrainConfig, tokenizer, info: DistInfo) -> (model) -> {metric name: value}
evaluators: Registry[Any] = Registry('evaluators', {
    'icl_tasks': 'llmfoundry.eval.during_training:IclEvaluator',
})
