"""The line that ends a run: how far it got, how long it took, its final loss and where its outputs are."""

from __future__ import annotations

import math

from llmfoundry.interfaces import TrainState


def format_duration(seconds: float) -> str:
    """`0.4s`, `45s`, `2m13s`, `1h02m`."""
    if seconds < 10:
        return f'{seconds:.1f}s'
    seconds = int(round(seconds))
    if seconds < 60:
        return f'{seconds}s'
    if seconds < 3600:
        return f'{seconds // 60}m{seconds % 60:02d}s'
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'


def run_summary(state: TrainState, checkpoint: str | None, seconds: float) -> str:
    """`Run NAME finished: 500 batches (128,000 tokens) in 2m13s; final train loss 3.84; checkpoint ...; metrics ...`
    (`stopped at batch N (reason)` instead of `finished` when the run was asked to stop)."""
    stamp = state.timestamp
    how = f'stopped ({state.stop_reason})' if state.stop_reason else 'finished'
    loss = f'{state.loss:.4g}' if math.isfinite(state.loss) else 'n/a (no batch trained)'
    saved = f'checkpoint {checkpoint} (latest)' if checkpoint else 'no checkpoint (save_folder is not set)'
    return (f'Run {state.run_name} {how}: {stamp.batch:,} batches ({stamp.token:,} tokens) in '
            f'{format_duration(seconds)}; final train loss {loss}; {saved}; '
            f'metrics {state.run_folder / "metrics.jsonl"}')


def divergence_summary(state: TrainState, checkpoint: str | None, diverged_path: str | None) -> str:
    """One line for a run that nan_monitor or loss_spike stopped: why, where a restart resumes, what to change."""
    if checkpoint:
        resume = (f'latest still names {checkpoint}, the last checkpoint before the divergence: autoresume restarts '
                  'from it and, with an unchanged config, diverges again; so before restarting')
    else:
        resume = 'there is no checkpoint to resume from; before restarting'
    kept = (f'the diverged state is saved at {diverged_path} (never picked by autoresume)' if diverged_path
            else 'the diverged state was not saved (save_on_divergence: false)')
    return (f'{state.stop_reason} Stopped at batch {state.timestamp.batch:,}; {resume} lower the learning rate '
            '(optimizer.lr=...), add gradient clipping or a longer warmup (docs/MULTINODE.md, Divergence); '
            f'{kept}.')
