"""The training loop: global batch -> microbatches -> forward/backward -> clip -> step -> schedule; evaluation,
events to callbacks and checkpoints at their intervals. Everything it runs is built beforehand (setup.py).

Loss normalisation: the loss of a step is the summed cross-entropy of every target token in the
global batch (all ranks, all microbatches) divided by the number of those tokens. Each microbatch
backpropagates its own sum divided by the global count; the data-parallel gradient reduction (DDP, or
FSDP2's reduce-scatter) then averages over ranks, so each rank's loss is also multiplied by the world
size. Neither the microbatch size nor the number of ranks changes the gradient (up to float reduction order).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
from torch.nn.parallel import DistributedDataParallel

from llmfoundry.config.schema import TrainConfig
from llmfoundry.config.time import Time, Timestamp, crossed, reached
from llmfoundry.config.validation import ConfigError
from llmfoundry.data.labels import IGNORE_INDEX
from llmfoundry.interfaces import Callback, DistInfo, MetricLogger, TrainState
from llmfoundry.models.fused_loss import LABELS_KWARG, TokenLoss, has_fused_loss
from llmfoundry.optim.schedulers import Scheduler, apply_lr

from .algorithms import GradientClipping
from .batching import count_targets, split_microbatches
from .checkpoint import CheckpointSaver
from .distributed import all_reduce_sum
from .fault_injection import inject_faults, poison_loss
from .float8 import after_optimizer_step
from .loss_eval import evaluate_loss, model_inputs, takes_sequence_id
from .metrics import LanguageCrossEntropy, LanguagePerplexity, TokenAccuracy, metric_name
from .microbatch import (
    MicrobatchOutOfMemory,
    OutOfMemoryAgreement,
    agreed_optimizer_step,
    halved,
    simulate_out_of_memory,
)
from .parallel import AUTOCAST_DTYPE
from .preemption import StopSignals
from .step_timing import StepTimer
from .summary import divergence_summary, run_summary

log = logging.getLogger(__name__)


def token_losses_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy. Labels are aligned with inputs: they are shifted here (the labels, not
    the logits, which would copy batch x seq x vocab)."""
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                           reduction='sum')


class CollectiveTimeout(RuntimeError):
    """A collective did not complete within dist_timeout: some rank is stuck or gone."""


class RunDiverged(Exception):
    """nan_monitor or loss_spike stopped the run: an error exit, and `latest` still names the last good checkpoint."""


class Trainer:
    """Runs a built run: `module` is what training steps call (state.model itself, or its DDP wrapper), `scheduler`
    the LR schedule, `clipping` the gradient clipping (None: none); eval and console lines at their intervals."""

    def __init__(
        self,
        config: TrainConfig,
        state: TrainState,
        *,
        module: nn.Module,
        train_loader: Any,
        eval_loaders: list[tuple[str, Any]],
        callbacks: list[Callback],
        logger: MetricLogger,
        scheduler: Scheduler,
        clipping: GradientClipping | None,
        eval_interval: Time,
        console_interval: Time,
        saver: CheckpointSaver | None = None,
        evaluators: list[Callable[[nn.Module], dict[str, float]]] | None = None,
    ) -> None:
        self.config = config
        self.state = state
        self.dist: DistInfo = state.dist
        self.module = module
        self.train_loader = train_loader
        self.eval_loaders = eval_loaders
        self.callbacks = callbacks
        self.logger = logger
        self.scheduler = scheduler
        self.clipping = clipping
        self.eval_interval = eval_interval
        self.console_interval = console_interval
        self.saver = saver
        self.evaluators = evaluators or []  # run after the eval loaders: model -> metrics (ICL tasks; setup.py)
        self.signals = StopSignals()
        self.phase = 'setup'  # what the loop is doing, for timeout reports
        self.last_eval_batch: int | None = None  # the batch count of the latest evaluation
        self.autocast_dtype = AUTOCAST_DTYPE.get(config.precision)
        self.scaler = self._grad_scaler()
        self.train_metrics = [LanguageCrossEntropy(), LanguagePerplexity(), TokenAccuracy()]
        self.auto_microbatch = config.device_train_microbatch_size == 'auto'  # halves on out of memory
        self.out_of_memory = OutOfMemoryAgreement(self.auto_microbatch, module, self.dist.rank, self.dist.device)
        if self.out_of_memory.units and config.fsdp_config and config.fsdp_config.forward_prefetch:
            log.warning('fsdp_config.forward_prefetch is off under device_train_microbatch_size: auto (a prefetched '
                        'all-gather could hang the ranks when one runs out of memory; microbatch.py).')
        self.takes_sequence_id = takes_sequence_id(state.model)
        self.fused_loss = has_fused_loss(state.model)  # model.loss_fn: fused_crossentropy (models/fused_loss.py)
        self.timing = StepTimer(self.dist.device)  # time/<phase> metrics at the console interval (step_timing.py)
        self.logs_batch = False  # whether the batch in progress crosses the console interval (its metrics are logged)

    def _grad_scaler(self) -> torch.amp.GradScaler | None:
        """amp_fp16's loss scaling. Under FSDP each rank checks only its gradient shards for inf/NaN: the sharded
        scaler all-reduces that check, so every rank skips the same steps and keeps the same scale."""
        if self.config.precision != 'amp_fp16':
            return None
        if isinstance(self.module, FSDPModule):
            return ShardedGradScaler(self.dist.device.type)
        return torch.amp.GradScaler(self.dist.device.type)

    # ----- one step -------------------------------------------------------------------------------
    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.dist.device.type, dtype=self.autocast_dtype)

    def _forward(self, module: nn.Module, batch: dict[str, torch.Tensor], fused_loss: bool = False) -> Any:
        """The logits; with `fused_loss` the model's TokenLoss for the batch's labels instead."""
        inputs = model_inputs(batch, self.takes_sequence_id)
        if fused_loss:
            inputs[LABELS_KWARG] = batch['labels']
        with self._autocast():
            out = module(**inputs)
        return out if fused_loss else out.logits

    def _loss_sum(self, micro: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any, Any]:
        """(summed loss, logits or None, correct-prediction count or None) of a microbatch: the fused loss never
        materialises logits, so it reports TokenAccuracy's count itself."""
        if self.fused_loss:
            token_loss: TokenLoss = self._forward(self.module, micro, fused_loss=True)
            return token_loss.loss_sum, None, token_loss.correct
        logits = self._forward(self.module, micro)
        return token_losses_sum(logits, micro['labels']), logits, None

    def _train_step(self, batch: dict[str, torch.Tensor]) -> None:
        state, device = self.state, self.dist.device
        self.phase = f'training batch {state.timestamp.batch + 1}'
        with self.timing.phase('data_wait'):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with self.timing.phase('communication'):
            counts = torch.tensor([count_targets(batch['labels']), int(batch['attention_mask'].sum()),
                                   batch['input_ids'].shape[0]], dtype=torch.float64, device=device)
            global_targets, global_tokens, global_samples = (int(v) for v in all_reduce_sum(counts).tolist())
        if global_targets == 0:
            raise RuntimeError(f'batch {state.timestamp.batch + 1} has no target tokens on any rank.')
        after = state.timestamp.after_batch(samples=global_samples, tokens=global_tokens)
        self.logs_batch = crossed(state.timestamp, after, self.console_interval, state.max_duration)
        loss_sum = self._step_with_retries(batch, global_targets)
        if self.signals.received:
            state.request_stop(f'received {self.signals.received}: saving and exiting')
        with self.timing.phase('communication'):
            stop = torch.tensor([loss_sum.item(), float(state.stop_reason is not None)], dtype=torch.float64,
                                device=device)
            total_loss, stop_votes = all_reduce_sum(stop).tolist()
        self.timing.batch_done()
        state.loss = total_loss / global_targets
        state.batch_samples, state.batch_tokens = global_samples, global_tokens
        state.timestamp = after
        if stop_votes and state.stop_reason is None:
            state.stop_reason = 'another rank asked to stop'

    def _step_with_retries(self, batch: dict[str, torch.Tensor], global_targets: int) -> torch.Tensor:
        """_accumulate, then _optimizer_step; this rank's summed loss. Under device_train_microbatch_size: auto, an
        out-of-memory error on any rank (in the optimizer step only before it changed anything) halves the
        microbatch on every rank and starts the batch over without the failed attempt's gradients (microbatch.py;
        before_optimizer_step then fires again for the retry)."""
        state = self.state
        while True:
            try:
                with self.timing.phase('forward_backward'):
                    loss_sum = self._accumulate(batch, global_targets)
                with self.timing.phase('optimizer'):
                    self._optimizer_step()
                    state.optimizer.zero_grad(set_to_none=True)
                return loss_sum
            except MicrobatchOutOfMemory:
                state.optimizer.zero_grad(set_to_none=True)
                if self.scaler:  # forget the failed attempt's unscale_ (torch resets it only in update(), which
                    # would also move the scale): the retry unscales its own gradients
                    self.scaler._per_optimizer_states.pop(id(state.optimizer), None)
                state.microbatch_size = halved(state.microbatch_size, state.timestamp.batch + 1)

    def _optimizer_step(self) -> None:
        state = self.state
        if self.scaler:
            self.scaler.unscale_(state.optimizer)
        self._event('before_optimizer_step')
        if self.clipping:
            self.clipping(state.model.parameters())
        with agreed_optimizer_step(self.auto_microbatch, state.optimizer, self.dist.device,
                                   state.timestamp.batch + 1):
            if self.scaler:
                self.scaler.step(state.optimizer)
                self.scaler.update()
            else:
                state.optimizer.step()
        after_optimizer_step(self.config, state.model)  # amp_fp8 with float8 all-gather: the next scales

    def _accumulate(self, batch: dict[str, torch.Tensor], global_targets: int) -> torch.Tensor:
        """Forward and backward of every microbatch (gradients accumulate); this rank's summed loss. The train
        metrics are those of the latest batch, so they are computed only for a batch that logs them (TokenAccuracy's
        argmax over the logits is as costly as a large matmul, and counting targets waits for the device)."""
        state, device = self.state, self.dist.device
        for metric in self.train_metrics:
            metric.reset()
        microbatches = split_microbatches(batch, state.microbatch_size)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for index, micro in enumerate(microbatches):
            with (self.out_of_memory.microbatch(state.timestamp.batch + 1),
                  self._gradient_sync(last=index == len(microbatches) - 1)):
                summed, logits, correct = self._loss_sum(micro)
                summed = poison_loss(summed, state.timestamp.batch + 1)
                loss = summed * (self.dist.world_size / global_targets)
                (self.scaler.scale(loss) if self.scaler else loss).backward()
                simulate_out_of_memory(self.dist.rank, state.timestamp.batch + 1, micro['input_ids'].shape[0])
            loss_sum += summed.detach().double()
            if not self.logs_batch:
                continue
            targets = count_targets(micro['labels'])
            for metric in self.train_metrics:
                if isinstance(metric, LanguageCrossEntropy):  # perplexity too: reuse the loss, no second pass
                    metric.add(summed, targets)
                elif correct is not None:  # TokenAccuracy under the fused loss
                    metric.add(correct, targets)
                else:
                    metric.update(logits.detach(), micro['labels'])
        return loss_sum

    def _gradient_sync(self, last: bool):
        """Reduce gradients across ranks only on the last microbatch of a step."""
        if isinstance(self.module, FSDPModule):
            self.module.set_requires_gradient_sync(last)  # sticky: set back to True on the last microbatch
            return contextlib.nullcontext()
        if last or not isinstance(self.module, DistributedDataParallel):
            return contextlib.nullcontext()
        return self.module.no_sync()

    # ----- evaluation ----------------------------------------------------------------------------
    @property
    def evaluates(self) -> bool:
        """Whether an evaluation has anything to run: eval loaders or evaluators (ICL tasks)."""
        return bool(self.eval_loaders or self.evaluators)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        model = self.state.model
        self.phase = f'evaluation after batch {self.state.timestamp.batch}'
        self._event('eval_start')
        was_training = model.training
        model.eval()
        results = evaluate_loss(lambda batch: self._forward(model, batch), self.eval_loaders, self.dist.device,
                                self.config.eval_subset_num_batches)
        for evaluator in self.evaluators:
            results.update(evaluator(model))
        model.train(was_training)
        self.last_eval_batch = self.state.timestamp.batch
        self.logger.log(results, self.state.timestamp)
        self._event('eval_end', results)
        return results

    # ----- the loop ------------------------------------------------------------------------------
    def _event(self, name: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, name)(self.state, self.logger, *args)

    def _done(self) -> bool:
        state = self.state
        return state.stop_reason is not None or reached(state.timestamp, state.max_duration, state.max_duration)

    def _batches_per_epoch(self) -> int | None:
        # Schedules written in epochs move every batch: Composer converts epochs to batches the same way.
        try:
            total = len(self.train_loader)
        except TypeError:
            return None
        subset = self.config.train_subset_num_batches
        return min(total, subset) if subset >= 0 else total

    def _epoch_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        batches = iter(self.train_loader)
        for index in itertools.count():
            with self.timing.phase('data_wait'):
                batch = next(batches, None)
            if batch is None or 0 <= self.config.train_subset_num_batches <= index:
                return
            yield batch

    def _log_train(self) -> None:
        state = self.state
        metrics = {'loss/train/total': state.loss}
        for metric in self.train_metrics:
            metric.sync()
            metrics[metric_name('train', metric)] = metric.compute()
        metrics.update(self.timing.metrics())
        self.logger.log(metrics, state.timestamp)

    def fit(self) -> TrainState:
        """Train to max_duration (or a stop request); a collective that times out is reported with its phase."""
        try:
            return self._fit()
        except (torch.distributed.DistError, RuntimeError) as error:
            if 'timed out' not in str(error).lower() and 'timeout' not in str(error).lower():
                raise
            raise CollectiveTimeout(
                f'rank {self.dist.rank}: a collective did not complete within dist_timeout='
                f'{self.config.dist_timeout:g} s during {self.phase}; another rank is stuck or died (see its log).'
            ) from error
        finally:
            self._event('close')

    def _fit(self) -> TrainState:
        state = self.state
        started, first_batch = time.monotonic(), state.timestamp.batch
        state.model.train()
        self._event('fit_start')
        if self.config.eval_first and self.evaluates:
            self.evaluate()
        with self.signals:
            while not self._done():
                if self._run_epoch():
                    previous = state.timestamp
                    state.timestamp = state.timestamp.after_epoch()
                    self._event('epoch_end')
                    self._evaluate_and_save(previous)
        if state.stop_reason:
            log.warning('Stopping at batch %d: %s', state.timestamp.batch, state.stop_reason)
        self._evaluate_at_end(trained=state.timestamp.batch > first_batch)
        diverged_path = self._save_at_end()
        self._event('fit_end')
        self.logger.close()
        last_path = self.saver.last_path if self.saver else None
        if state.diverged:
            raise RunDiverged(divergence_summary(state, last_path, diverged_path))
        log.info(run_summary(state, last_path, time.monotonic() - started))
        return state

    def _evaluate_at_end(self, trained: bool) -> None:
        """As Composer does, evaluate once at the end of training unless an interval just did (or nothing was
        trained, e.g. a restart after the end). Not after a stop request: a preempted run must exit quickly, and
        a diverged one has nothing worth measuring."""
        just_evaluated = self.last_eval_batch == self.state.timestamp.batch
        if self.evaluates and trained and self.state.stop_reason is None and not just_evaluated:
            self.evaluate()

    def _save_at_end(self) -> str | None:
        """The end of training is always checkpointed; a diverged state only with save_on_divergence (returns where)."""
        if not self.saver:
            return None
        if not self.state.diverged:
            self._save_and_upload(lambda: self.saver.save(self.state, self.train_loader))
            return None
        if self.config.save_on_divergence:
            return self._save_and_upload(lambda: self.saver.save_diverged(self.state, self.train_loader))
        return None

    def _save_and_upload(self, save: Callable[[], str | None]) -> str | None:
        """Run `save`; a checkpoint it wrote (complete on every rank by then) goes to the loggers that store files
        (W&B's log_artifacts). Returns what `save` returned."""
        before = self.saver.last_path
        returned = save()
        written = returned or self.saver.last_path
        if written and written != before:
            self.logger.upload_file(written)
        return returned

    def _run_epoch(self) -> bool:
        """Train through the loader once; False when the run ended before the epoch did."""
        batches = 0
        for batch in self._epoch_batches():
            batches += 1
            self._run_batch(batch)
            if self._done():
                return False
        if batches == 0:
            raise ConfigError('train_loader produced no batch: the dataset is smaller than one device batch '
                              '(with drop_last: true) or empty.')
        return True

    def _run_batch(self, batch: dict[str, torch.Tensor]) -> None:
        state = self.state
        state.lr_multiplier = self.scheduler(state.timestamp, state.max_duration, self._batches_per_epoch())
        apply_lr(state.optimizer, state.lr_multiplier)
        self._event('batch_start')
        previous = state.timestamp
        self._train_step(batch)
        if not math.isfinite(state.loss):
            log.warning('batch %d: loss is %s', state.timestamp.batch, state.loss)
        with self.timing.phase('logging'):
            if self.logs_batch:
                self._log_train()
            self._event('after_train_batch')  # divergence monitors first: no batch_end exports a diverged state
            self._event('batch_end')
        self._evaluate_and_save(previous)
        inject_faults(self.dist.rank, state.timestamp.batch)

    def _evaluate_and_save(self, previous: Timestamp) -> None:
        """Evaluate and checkpoint when moving from `previous` to now crossed their intervals (not once diverged)."""
        state = self.state
        if state.diverged:
            return
        if self.evaluates and crossed(previous, state.timestamp, self.eval_interval, state.max_duration):
            self.evaluate()
        if self.saver:
            self.phase = f'checkpoint after batch {state.timestamp.batch}'
            self._save_and_upload(lambda: self.saver.after_step(previous, state, self.train_loader))
