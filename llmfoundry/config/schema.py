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
class FP8Config:
    """fp8_config: float8 training under precision: amp_fp8 (torchao's Float8Linear; applied by train/float8.py).

    recipe: torchao's recipe name: tensorwise (one scale per tensor, fastest), rowwise (one scale per row, more
    accurate), rowwise_with_gw_hp (rowwise, the weight gradient in bf16). enable_fsdp_float8_all_gather: FSDP2
    gathers the float8 weights (half the bytes of bf16); tensorwise only. precompute_float8_dynamic_scale_for_fsdp:
    one all-reduce after each optimizer step computes every weight's scale (needs the float8 all-gather).
    min_features: a Linear layer runs in float8 only when both its sizes are at least this (float8.py says why).
    fp8_format (TransformerEngine's key): HYBRID (e4m3 forward, e5m2 gradients; tensorwise) or E4M3 (e4m3
    throughout). amax_history_len / amax_compute_algo (TransformerEngine's delayed scaling) have no effect: every
    scale here comes from the tensor's current amax.
    """

    recipe: str = 'tensorwise'
    enable_fsdp_float8_all_gather: bool = False
    precompute_float8_dynamic_scale_for_fsdp: bool = False
    min_features: int = 2048
    fp8_format: str | None = None
    amax_history_len: int | None = None
    amax_compute_algo: str | None = None

    def __post_init__(self) -> None:
        if self.recipe not in FP8_RECIPES:
            raise ConfigError(f"fp8_config.recipe={self.recipe!r} is invalid; allowed: {', '.join(FP8_RECIPES)}.")
        if self.enable_fsdp_float8_all_gather and self.recipe != 'tensorwise':
            raise ConfigError(f'fp8_config.enable_fsdp_float8_all_gather: true needs recipe: tensorwise (torchao '
                              f'gathers float8 weights with one scale per tensor only); recipe is {self.recipe}.')
        if self.precompute_float8_dynamic_scale_for_fsdp and not self.enable_fsdp_float8_all_gather:
            raise ConfigError('fp8_config.precompute_float8_dynamic_scale_for_fsdp: true needs '
                              'enable_fsdp_float8_all_gather: true (it precomputes the scales of gathered weights).')
        if self.min_features < 16 or self.min_features % 16:
            raise ConfigError(f'fp8_config.min_features={self.min_features} must be a positive multiple of 16 '
                              '(float8 matmuls need sizes divisible by 16).')
        fp8_format = None if self.fp8_format is None else self.fp8_format.upper()
        if fp8_format not in (None, 'HYBRID', 'E4M3'):
            raise ConfigError(f'fp8_config.fp8_format={self.fp8_format!r} is invalid; allowed: HYBRID, E4M3.')
        if fp8_format == 'HYBRID' and self.recipe != 'tensorwise':
            raise ConfigError(f'fp8_config.fp8_format: HYBRID (e5m2 gradients) needs recipe: tensorwise; the '
                              f'{self.recipe} recipe casts gradients to e4m3: remove fp8_format or set it to E4M3.')
        self.fp8_format = fp8_format


@dataclass
class ProfilerSchedule:
    """profiler.schedule (Composer's cyclic_schedule, in batches): skip `skip_first` batches once, then `repeat`
    cycles (0: until the end) of `wait` idle, `warmup` traced but discarded, `active` traced and written."""

    skip_first: int = 0
    wait: int = 0
    warmup: int = 1
    active: int = 4
    repeat: int = 1

    def __post_init__(self) -> None:
        for key in ('skip_first', 'wait', 'warmup', 'repeat'):
            if getattr(self, key) < 0:
                raise ConfigError(f'profiler.schedule.{key}={getattr(self, key)} must be >= 0.')
        if self.active < 1:
            raise ConfigError(f'profiler.schedule.active={self.active} must be >= 1 (the batches a trace holds).')


@dataclass
class ProfilerConfig:
    """llm-foundry's `profiler:` section (Composer's Profiler keys): torch.profiler traces of training batches, one
    Chrome trace per rank and cycle (train/profiler.py). sys_prof_* feed Composer's own JSON event trace, which is
    not built (json_trace_handler is refused): they have no effect here."""

    schedule: ProfilerSchedule
    torch_prof_folder: str = '{run_name}/torch_traces'
    torch_prof_filename: str = 'rank{rank}.{batch}.pt.trace.json'
    torch_prof_remote_file_name: str | None = None
    torch_prof_memory_filename: str | None = None
    torch_prof_memory_remote_file_name: str | None = None
    torch_prof_overwrite: bool = False
    torch_prof_use_gzip: bool = False
    torch_prof_record_shapes: bool = False
    torch_prof_profile_memory: bool = True
    torch_prof_with_stack: bool = False
    torch_prof_with_flops: bool = True
    torch_prof_num_traces_to_keep: int = -1
    sys_prof_cpu: bool = True
    sys_prof_memory: bool = False
    sys_prof_disk: bool = False
    sys_prof_net: bool = False
    sys_prof_stats_thread_interval_seconds: float = 0.5
    json_trace_handler: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.json_trace_handler is not None:
            raise ConfigError('profiler.json_trace_handler is not supported (Composer\'s JSON event trace is not '
                              'built); remove it: the torch traces in profiler.torch_prof_folder hold every op.')
        if self.torch_prof_memory_filename is not None:
            raise ConfigError('profiler.torch_prof_memory_filename is not supported yet (the memory timeline export '
                              'is not built); remove it: torch_prof_profile_memory: true records allocations in the '
                              'trace itself.')
        if self.torch_prof_num_traces_to_keep == 0 or self.torch_prof_num_traces_to_keep < -1:
            raise ConfigError(f'profiler.torch_prof_num_traces_to_keep={self.torch_prof_num_traces_to_keep} is '
                              'invalid: -1 keeps every trace, N >= 1 the newest N of each rank.')


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

    # ICL tasks and the eval gauntlet at every evaluation (built by eval/during_training.py; docs/EVAL.md)
    icl_tasks: list[dict[str, Any]] | str | None = None  # a list, or the path of a YAML file with `icl_tasks:`
    icl_tasks_str: str | None = None  # llm-foundry's name for icl_tasks given as a path
    icl_seq_len: int | None = None  # the tasks' default max_seq_len; None: max_seq_len
    icl_subset_num_batches: int | None = None  # None: eval_subset_num_batches (when >= 0), as Composer does
    eval_gauntlet: dict[str, Any] | str | None = None  # a mapping, or the path of a YAML file with `eval_gauntlet:`
    eval_gauntlet_str: str | None = None  # llm-foundry's name for eval_gauntlet given as a path

    # System
    seed: int = 17
    precision: str = 'amp_bf16'
    fsdp_config: FSDPConfig | None = None
    fp8_config: FP8Config | None = None  # precision: amp_fp8 only
    profiler: ProfilerConfig | None = None
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
    save_ignore_keys: list[str] | None = None  # Composer paths left out of each checkpoint (checkpoint/ignore_keys.py)
    save_on_divergence: bool = False  # also save a stop by nan_monitor / loss_spike, as diverged-<name> (never latest)
    load_path: str | None = None
    load_weights_only: bool = False
    load_strict_model_weights: bool = True
    load_ignore_keys: list[str] | None = None  # Composer paths left out of load_path (train/checkpoint/ignore_keys.py)
    autoresume: bool = False

    def __post_init__(self) -> None:
        for key in ('max_duration', 'eval_interval', 'console_log_interval', 'save_interval'):
            Time.parse(getattr(self, key), path=key)
        if not self.accumulate_train_batch_on_tokens:
            raise ConfigError('accumulate_train_batch_on_tokens=false is not supported: the loss of a step is '
                              'always averaged over the target tokens of the whole global batch.')
        if self.eval_loader is not None and self.eval_loaders is not None:
            raise ConfigError('Set either eval_loader or eval_loaders (a list, each with a label), not both.')
        self._check_icl()
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

    def _check_icl(self) -> None:
        for key in ('icl_tasks', 'eval_gauntlet'):
            if getattr(self, key) is not None and getattr(self, f'{key}_str') is not None:
                raise ConfigError(f'Set either {key} or {key}_str (both name the same thing), not both.')
        no_tasks = self.icl_tasks is None and self.icl_tasks_str is None
        if no_tasks and (self.eval_gauntlet is not None or self.eval_gauntlet_str is not None):
            raise ConfigError('eval_gauntlet needs icl_tasks (the benchmarks it scores); add icl_tasks or remove it.')
        for key in ('icl_seq_len', 'icl_subset_num_batches'):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f'{key}={value} must be a positive integer (or null for the default).')


PRECISIONS = ('fp32', 'amp_bf16', 'amp_fp16', 'amp_fp8')
FP8_RECIPES = ('tensorwise', 'rowwise', 'rowwise_with_gw_hp')
TOP_LEVEL_HINT = ' Free variables for interpolation belong under `variables:`.'
