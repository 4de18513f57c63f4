"""The train YAML's ICL tasks and eval gauntlet, scored by the trainer at every evaluation (eval_interval, the end
of training, eval_first).

The trainer builds this by name from the `evaluators` registry (train/ never imports eval/). Building it reads the
tasks and the gauntlet and checks every task file, so a wrong file fails before training starts. Each evaluation
scores the tasks with the code `llmfoundry eval` uses (runner.py) and logs the same names and values it would for
the same weights.
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedTokenizerBase

from llmfoundry.config.schema import TrainConfig
from llmfoundry.interfaces import DistInfo

from .gauntlet import parse_gauntlet
from .report import icl_metrics
from .runner import build_metrics, build_task, evaluate_task, load_records
from .task_config import IclTaskConfig, load_section, load_tasks


class IclEvaluator:
    """`icl_tasks` (+ `eval_gauntlet`) of `config`: called with the model, returns the metrics to log."""

    def __init__(self, config: TrainConfig, tokenizer: PreTrainedTokenizerBase, info: DistInfo) -> None:
        seq_len = config.icl_seq_len or config.max_seq_len
        self.tasks = load_tasks(config.icl_tasks or config.icl_tasks_str, seq_len, config.device_eval_batch_size)
        gauntlet = config.eval_gauntlet or config.eval_gauntlet_str
        self.gauntlet = parse_gauntlet(load_section(gauntlet, 'eval_gauntlet')) if gauntlet is not None else None
        self.tokenizer, self.info, self.precision = tokenizer, info, config.precision
        self.subset_num_batches = config.icl_subset_num_batches
        if self.subset_num_batches is None and config.eval_subset_num_batches >= 0:
            self.subset_num_batches = config.eval_subset_num_batches
        for task in self.tasks:
            self._check(task)

    def _check(self, config: IclTaskConfig) -> None:
        """The task's type and metrics exist and its file reads, every line fitting the type."""
        task = build_task(config, self.tokenizer)
        build_metrics(task)
        load_records(task)

    def __call__(self, model: nn.Module) -> dict[str, float]:
        """Every task's metrics and the gauntlet's scores for `model` (in eval mode), the same on every rank."""
        results = []
        for task in self.tasks:
            results += evaluate_task(model, self.tokenizer, task, self.info, self.precision, self.subset_num_batches)
        return icl_metrics(results, self.gauntlet)
