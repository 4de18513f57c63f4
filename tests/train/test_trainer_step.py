"""One training step: microbatching and token normalisation do not change the gradient; the loop's timing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from llmfoundry.config.schema import FSDPConfig, TrainConfig
from llmfoundry.config.time import Time, Timestamp
from llmfoundry.config.validation import from_dict
from llmfoundry.interfaces import Callback, DistInfo, MetricLogger, TrainState
from llmfoundry.models.fused_loss import install_fused_loss
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.optim.optimizers import build_optimizer
from llmfoundry.optim.schedulers import build_scheduler
from llmfoundry.train.algorithms import build_gradient_clipping
from llmfoundry.train.parallel import build_mesh, parallelize
from llmfoundry.train.trainer import Trainer

VOCAB = 64
N_LAYERS = 2

# Tolerances for float32 results computed in different reduction orders (microbatching, token normalisation, another
# CPU's kernels): float32 rounds each operation to a relative UNIT_ROUNDOFF, and a sum of n terms is then exact to
# n * UNIT_ROUNDOFF relative to the sum of the terms' magnitudes (the classical worst-case bound), whatever the order.
# The longest reduction here is the FFN's 4 * d_model = 128 (a weight gradient sums 4 x 16 tokens, the softmax 64
# logits), and the error compounds once per block the gradient crosses (the blocks and the head). Measured: ~1.6e-6
# on AVX512, AVX2 and the default kernels, against 2.3e-5 allowed; a wrong normalisation is off by ~0.5.
UNIT_ROUNDOFF = torch.finfo(torch.float32).eps / 2
LONGEST_REDUCTION = 4 * 32
FLOAT32_RTOL = (N_LAYERS + 1) * LONGEST_REDUCTION * UNIT_ROUNDOFF


def tiny_model(seed: int = 0) -> MPTForCausalLM:
    torch.manual_seed(seed)
    config = MPTConfig(d_model=32, n_heads=4, n_layers=N_LAYERS, vocab_size=VOCAB, max_seq_len=32, no_bias=True,
                       attn_config={'attn_impl': 'torch', 'alibi': True})
    return MPTForCausalLM(config)


def batches(count: int, rows: int = 4, seq: int = 16, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    """Rows with different amounts of padding, so per-row token counts differ."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        ids = torch.randint(0, VOCAB, (rows, seq), generator=generator)
        mask = torch.ones_like(ids)
        for row in range(rows):
            mask[row, seq - 3 * row:] = 0
        out.append({'input_ids': ids, 'attention_mask': mask, 'labels': ids.masked_fill(mask == 0, -100)})
    return out


class GradientRecorder(Callback):
    def __init__(self) -> None:
        self.grads: list[dict[str, torch.Tensor]] = []
        self.weights: list[dict[str, torch.Tensor]] = []  # the weights each step's gradient was computed at
        self.losses: list[float] = []

    def before_optimizer_step(self, state, logger) -> None:
        self.grads.append({n: p.grad.clone() for n, p in state.model.named_parameters()})
        self.weights.append({n: p.detach().clone() for n, p in state.model.named_parameters()})

    def batch_end(self, state, logger) -> None:
        self.losses.append(state.loss)


def make_trainer(tmp_path: Path, loader, microbatch: int | str, callbacks=(), *, rank: int = 0, world_size: int = 1,
                 fsdp: FSDPConfig | None = None, fused_loss: bool = False, **overrides) -> Trainer:
    """A 3-batch fp32 run of tiny_model on `loader`; on several (gloo) ranks sharded with `fsdp`. Microbatch 'auto'
    starts at the device batch, as setup.py does. `fused_loss`: model.loss_fn fused_crossentropy."""
    raw = dict(model={}, tokenizer={}, optimizer={'name': 'decoupled_adamw', 'lr': 1e-2}, scheduler={
        'name': 'constant_with_warmup', 't_warmup': '0ba'}, train_loader={}, max_duration='3ba', max_seq_len=16,
        global_train_batch_size=4, device_train_microbatch_size=microbatch, precision='fp32')
    raw.update(overrides)
    config = from_dict(TrainConfig, raw)
    model = tiny_model()
    if fused_loss:
        install_fused_loss(model)  # before parallelising, as build_model does
    module = parallelize(model, fsdp, build_mesh(fsdp, world_size, 'cpu'), precision='fp32') if fsdp else model
    device_batch = 4 // world_size
    state = TrainState(config=config, model=model, optimizer=build_optimizer(config.optimizer, model),
                       dist=DistInfo(rank, world_size, rank, torch.device('cpu')),
                       max_duration=Time.parse(config.max_duration), run_name='t', run_folder=tmp_path,
                       device_train_batch_size=device_batch,
                       microbatch_size=device_batch if microbatch == 'auto' else microbatch)
    return Trainer(config, state, module=module, train_loader=loader, eval_loaders=[], callbacks=list(callbacks),
                   logger=MetricLogger([], True), scheduler=build_scheduler(config.scheduler),
                   clipping=build_gradient_clipping(config.algorithms), eval_interval=Time.parse(config.eval_interval),
                   console_interval=Time.parse(config.console_log_interval))


def float64_reference(batch: dict[str, torch.Tensor], weights: dict[str, torch.Tensor] | None = None):
    """The exact mean cross-entropy over all target tokens of the whole batch and its gradients, in float64."""
    model = tiny_model().double()
    if weights is not None:
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(weights[name])
    out = model(batch['input_ids'], attention_mask=batch['attention_mask'], labels=batch['labels'])
    out.loss.backward()
    return out.loss.item(), {name: p.grad for name, p in model.named_parameters()}


def assert_float32_close(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    """Each entry within FLOAT32_RTOL of its tensor's largest entry: a summed entry's error scales with the
    magnitudes of its terms, not with its value, which can cancel to ~0 (a per-entry rtol fails there)."""
    assert got.keys() == expected.keys()
    for name, reference in expected.items():
        scale = reference.abs().max().item()
        diff = (got[name].double() - reference).abs().max().item()
        tolerance = FLOAT32_RTOL * scale
        assert diff <= tolerance, (f'{what}: {name}: max abs diff {diff:.3e} = {diff / scale:.3e} of the largest '
                                   f'entry {scale:.3e}; tolerance {tolerance:.3e} (rtol {FLOAT32_RTOL:.2e})')


def assert_loss_close(got: float, expected: float, what: str) -> None:
    diff = abs(got - expected)
    assert diff <= FLOAT32_RTOL * abs(expected), (
        f'{what}: loss {got!r} vs {expected!r}: abs diff {diff:.3e}, relative {diff / abs(expected):.3e}, '
        f'tolerance rtol {FLOAT32_RTOL:.2e}')


@pytest.mark.parametrize('microbatch', [1, 3, 4])
def test_microbatch_size_does_not_change_gradients_or_losses(tmp_path, microbatch):
    data = batches(3)
    recorder = GradientRecorder()
    make_trainer(tmp_path, data, microbatch, [recorder]).fit()
    assert len(recorder.grads) == len(recorder.losses) == 3  # one optimizer step per batch, not per microbatch
    # Every step, at the weights it was taken from: the whole batch's exact loss and gradients, to float32 rounding.
    # (Runs with different microbatch sizes are not compared step for step: Adam's first steps are ~lr * sign(g),
    # which turns float32 noise in near-zero gradient entries into different weights.)
    for step, (batch, weights) in enumerate(zip(data, recorder.weights)):
        loss, grads = float64_reference(batch, weights)
        assert_loss_close(recorder.losses[step], loss, f'microbatch {microbatch}, step {step}')
        assert_float32_close(recorder.grads[step], grads, f'microbatch {microbatch}, step {step}')


def test_step_loss_is_the_mean_over_all_target_tokens(tmp_path):
    data = batches(1)  # rows with 15, 12, 9 and 6 targets: a mean of per-row means is ~50% off
    recorder = GradientRecorder()
    trainer = make_trainer(tmp_path, data, 1, [recorder], max_duration='1ba')
    trainer.fit()
    loss, grads = float64_reference(data[0])
    assert_loss_close(trainer.state.loss, loss, 'one row per microbatch')
    assert_float32_close(recorder.grads[0], grads, 'one row per microbatch')
    # The unbatched float32 model is the same computation in another order: it agrees to the same tolerance.
    model = tiny_model()
    out = model(data[0]['input_ids'], attention_mask=data[0]['attention_mask'], labels=data[0]['labels'])
    out.loss.backward()
    assert_loss_close(out.loss.item(), loss, 'whole batch in float32')
    assert_float32_close({name: p.grad for name, p in model.named_parameters()}, grads, 'whole batch in float32')


def test_loop_runs_epochs_until_max_duration_and_counts_tokens(tmp_path):
    data = batches(2)  # 2 batches per epoch
    seen = []

    class Stamps(Callback):
        def batch_end(self, state, logger):
            seen.append((state.timestamp.epoch, state.timestamp.batch, state.timestamp.sample, state.timestamp.token))

    trainer = make_trainer(tmp_path, data, 2, [Stamps()], max_duration='5ba')
    trainer.fit()
    tokens_per_batch = int(data[0]['attention_mask'].sum())
    assert [s[:3] for s in seen] == [(0, 1, 4), (0, 2, 8), (1, 3, 12), (1, 4, 16), (2, 5, 20)]
    assert seen[-1][3] == 5 * tokens_per_batch
    trainer = make_trainer(tmp_path, data, 2, [], max_duration='2ep')
    state = trainer.fit()
    assert (state.timestamp.epoch, state.timestamp.batch) == (2, 4)


def test_a_callback_can_stop_the_run(tmp_path):
    class StopAtTwo(Callback):
        def batch_end(self, state, logger):
            if state.timestamp.batch == 2:
                state.request_stop('enough')

    state = make_trainer(tmp_path, batches(4), 4, [StopAtTwo()], max_duration='10ba').fit()
    assert state.timestamp.batch == 2 and state.stop_reason == 'enough'


@pytest.mark.parametrize('precision', ['amp_bf16', 'amp_fp16'])
def test_mixed_precision_runs_close_to_fp32(tmp_path, precision):
    data = batches(2)
    reference, mixed = GradientRecorder(), GradientRecorder()
    make_trainer(tmp_path, data, 2, [reference], max_duration='2ba').fit()
    make_trainer(tmp_path, data, 2, [mixed], max_duration='2ba', precision=precision).fit()
    assert mixed.losses == pytest.approx(reference.losses, rel=2e-2), (mixed.losses, reference.losses)
    for name, grad in reference.grads[0].items():  # the fp16 grad scaler's factor is removed before this event
        diff, tolerance = (mixed.grads[0][name] - grad).norm().item(), 0.05 * grad.norm().item() + 1e-6
        assert diff <= tolerance, f'{name}: norm of the difference {diff:.3e}, tolerance {tolerance:.3e}'


def test_gradient_clipping_by_norm_and_value():
    from llmfoundry.config.validation import ConfigError

    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))]
    params[0].grad, params[1].grad = torch.tensor([3.0, 0.0, 4.0]), torch.tensor([0.0, 12.0])
    build_gradient_clipping({'gradient_clipping': {'clipping_type': 'norm', 'clipping_threshold': 1.0}})(params)
    assert torch.cat([p.grad for p in params]).norm().item() == pytest.approx(1.0, rel=1e-5)
    params[0].grad = torch.tensor([3.0, -0.5, -4.0])
    build_gradient_clipping({'gradient_clipping': {'clipping_type': 'value', 'clipping_threshold': 1.0}})(params)
    assert params[0].grad.tolist() == [1.0, -0.5, -1.0]
    assert build_gradient_clipping(None) is None
    with pytest.raises(ConfigError, match="clipping_type='adaptive' is invalid; allowed: norm, value"):
        build_gradient_clipping({'gradient_clipping': {'clipping_type': 'adaptive', 'clipping_threshold': 1.0}})
    with pytest.raises(ConfigError, match='algorithms.low_precision_layernorm is not supported'):
        build_gradient_clipping({'low_precision_layernorm': {}})


def test_code_paths_register_plugins_and_compile_config_compiles_blocks(tmp_path):
    from llmfoundry.config.validation import ConfigError
    from llmfoundry.registry import callbacks
    from llmfoundry.train.parallel import compile_blocks
    from llmfoundry.train.setup import import_code_paths

    plugin = tmp_path / 'plugin.py'
    plugin.write_text('from llmfoundry.interfaces import Callback\nfrom llmfoundry.registry import callbacks\n'
                      "callbacks.register('my_plugin_callback')(type('Mine', (Callback,), {}))\n")
    import_code_paths([str(plugin)])
    assert 'my_plugin_callback' in callbacks.names()
    with pytest.raises(ConfigError, match="code_paths\\[0\\]='nope.py' is not a file"):
        import_code_paths(['nope.py'])
    model = tiny_model()
    compile_blocks(model, {'backend': 'eager'})
    assert all(block._compiled_call_impl is not None for block in model.transformer.blocks)
    ids = torch.randint(0, VOCAB, (1, 8))
    torch.testing.assert_close(model(ids).logits, tiny_model()(ids).logits)


def test_labelled_eval_loaders_log_under_their_labels(tmp_path):
    logged = []

    class Capture(Callback):
        def eval_end(self, state, logger, metrics):
            logged.append(metrics)

    trainer = make_trainer(tmp_path, batches(2), 4, [Capture()], max_duration='2ba', eval_interval='1ba',
                           eval_first=True, eval_subset_num_batches=1)
    trainer.eval_loaders = [('c4', batches(3, seed=5)), ('code', batches(3, seed=6))]
    trainer.fit()
    assert len(logged) == 3  # eval_first, then after each of the 2 batches
    assert set(logged[0]) == {f'metrics/eval/{label}/{name}' for label in ('c4', 'code')
                              for name in ('LanguageCrossEntropy', 'LanguagePerplexity', 'TokenAccuracy')}
    # Before training, with eval_subset_num_batches=1: exactly the loss of each loader's first batch.
    model = tiny_model().eval()
    for label, seed in (('c4', 5), ('code', 6)):
        first = batches(3, seed=seed)[0]
        with torch.no_grad():
            expected = model(first['input_ids'], attention_mask=first['attention_mask'], labels=first['labels']).loss
        # the same float32 losses, summed in another order (the metric sums them, the model takes the mean)
        assert_loss_close(logged[0][f'metrics/eval/{label}/LanguageCrossEntropy'], expected.item(), label)
        cross_entropy = logged[0][f'metrics/eval/{label}/LanguageCrossEntropy']
        assert logged[0][f'metrics/eval/{label}/LanguagePerplexity'] == pytest.approx(math.exp(cross_entropy))


def test_llm_foundry_style_load_paths_resolve_to_the_newest_checkpoint(tmp_path):
    from llmfoundry.config.validation import ConfigError
    from llmfoundry.train import checkpoint
    from llmfoundry.train.checkpoint.resume import load_path_for

    state = make_trainer(tmp_path, batches(1), 4).state
    state.run_name = 'run7'
    folder = tmp_path / 'run7' / 'checkpoints'
    for batch in (2, 4):
        state.timestamp = Timestamp(batch=batch)
        checkpoint.save(checkpoint.SaveSettings(str(folder)), checkpoint.CheckpointParts(
            state.model, state.optimizer, state.timestamp, {}, ''), rank=0, world_size=1)
    composer_style = f'{tmp_path}/{{run_name}}/checkpoints/latest-rank{{rank}}.pt'
    assert load_path_for(composer_style, state) == str(folder / 'ep0-ba4')
    assert load_path_for(f'{tmp_path}/{{run_name}}/checkpoints/ep0-ba2', state) == str(folder / 'ep0-ba2')
    with pytest.raises(ConfigError, match="'\\{rank\\}' is only understood in Composer's"):
        load_path_for(f'{tmp_path}/ckpt-rank{{rank}}', state)
    with pytest.raises(ConfigError, match='no complete checkpoint in'):
        load_path_for(f'{tmp_path}/empty/latest-rank{{rank}}.pt', state)
