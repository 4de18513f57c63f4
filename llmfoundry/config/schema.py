"""The training config: llm-foundry's TrainConfig keys and defaults as typed dataclasses.

Sections that name a registered component (model, tokenizer, optimizer, scheduler, loaders, callbacks,
loggers, algorithms) stay mappings here; their builders validate their own keys. llm-foundry keys for
features not built yet are not fields: config/not_built.py refuses them when set and drops them when null.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .time import Time
from .validation import ConfigError


@dataclass
class FSDPConfig:
    """llm-foundry's fsdp_config keys (applied by the parallelism code, on FSDP2)."""

    sharding_strategy: str = 'FULL_SHARD'
    mixed_precision: str | dict = 'DEFAULT'
    activation_checkpointing: bool = False
    activation_checkpointing_reentrant: bool = False
    activation_checkpointing_every_n_layers: int = 1
    activation_cpu_offload: bool = False
    limit_all_gathers: bool = True
    forward_prefetch: bool = False
    backward_prefetch: str | None = 'BACKWARD_PRE'
    state_dict_type: str = 'sharded'
    use_orig_params: bool = True
    sync_module_states: bool = False
    cpu_offload: bool = False
    data_parallel_shard_degree: int = -1
    data_parallel_replicate_degree: int | None = None
    verbose: bool = False
    load_monolith_rank0_only: bool = False


@dataclass
class TrainConfig:
    # Components (each validated by its builder)
    model: dict[str, Any]
    tokenizer: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    train_loader: dict[str, Any]
    max_duration: str | int
    max_seq_len: int
    eval_loader: dict[str, Any] | None = None
    eval_loaders: list[dict[str, Any]] | None = None
    callbacks: dict[str, Any] | None = None
    loggers: dict[str, Any] | None = None
    algorithms: dict[str, Any] | None = None

    # Batching and duration
    global_train_batch_size: int | None = None
    device_train_batch_size: int | None = None
    device_train_microbatch_size: int | str = 'auto'
    device_eval_batch_size: int = 8
    eval_interval: str | int = 1
    eval_first: bool = False
    eval_subset_num_batches: int = -1
    train_subset_num_batches: int = -1
    accumulate_train_batch_on_tokens: bool = True

    # System
    seed: int = 17
    precision: str = 'amp_bf16'
    fsdp_config: FSDPConfig | None = None
    compile_config: dict[str, Any] | None = None
    dist_timeout: float = 600.0
    code_paths: list[str] | None = None
    # CUDA allocator / module loading: environment variables set before CUDA starts (environment.py)
    max_split_size_mb: int | None = None
    expandable_segments: bool = True
    cuda_load_lazy: bool = False
    spin_dataloaders: bool = True  # no effect here; warns when false (no_op.py says why)

    # Logging
    run_name: str | None = None
    progress_bar: bool = False
    log_to_console: bool = True
    console_log_interval: str | int = '1ba'
    log_config: bool = True
    python_log_level: str | None = 'debug'
    metadata: dict[str, Any] | None = None  # logged with the hyperparameters (metadata.py)
    flatten_metadata: bool = True

    # Checkpoints
    save_folder: str | None = None
    save_filename: str = 'ep{epoch}-ba{batch}-rank{rank}.pt'
    save_latest_filename: str | None = 'latest-rank{rank}.pt'
    save_interval: str | int = '1000ba'
    save_num_checkpoints_to_keep: int = -1
    save_overwrite: bool = False
    save_weights_only: bool = False
    save_on_divergence: bool = False  # also save a stop by nan_monitor / loss_spike, as diverged-<name> (never latest)
    load_path: str | None = None
    load_weights_only: bool = False
    load_strict_model_weights: bool = True
    autoresume: bool = False

    def __post_init__(self) -> None:
        for key in ('max_duration', 'eval_interval', 'console_log_interval', 'save_interval'):
            Time.parse(getattr(self, key), path=key)
        if not self.accumulate_train_batch_on_tokens:
            raise ConfigError('accumulate_train_batch_on_tokens=false is not supported: the loss of a step is '
                              'always averaged over the target tokens of the whole global batch.')
        if self.eval_loader is not None and self.eval_loaders is not None:
            raise ConfigError('Set either eval_loader or eval_loaders (a list, each with a label), not both.')
        if self.global_train_batch_size is None and self.device_train_batch_size is None:
            raise ConfigError('Set global_train_batch_size (or device_train_batch_size).')
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r} is invalid; allowed: {', '.join(PRECISIONS)}.")
        micro = self.device_train_microbatch_size
        if isinstance(micro, str) and micro != 'auto' or isinstance(micro, int) and micro <= 0:
            raise ConfigError(f"device_train_microbatch_size={micro!r} is invalid; use a positive integer or 'auto'.")
        if self.save_latest_filename not in (None, 'latest-rank{rank}.pt', 'latest'):
            raise ConfigError(f'save_latest_filename={self.save_latest_filename!r}: the pointer to the newest '
                              "checkpoint is always 'latest' (one sharded folder serves every rank); remove the key.")
        if self.autoresume and not self.run_name:
            raise ConfigError('autoresume: true needs a run_name, so a restarted job finds its own checkpoints.')


PRECISIONS = ('fp32', 'amp_bf16', 'amp_fp16')
TOP_LEVEL_HINT = ' Free variables for interpolation belong under `variables:`.'
