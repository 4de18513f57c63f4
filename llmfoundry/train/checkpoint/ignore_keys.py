"""`load_ignore_keys` / `save_ignore_keys`: Composer's paths into a checkpoint's state, left out when `load_path`
is loaded / when a checkpoint is saved.

Composer names the parts of its state with '/'-joined paths and matches each pattern (fnmatch: `*`, `?`, `[...]`)
against them; a pattern that matches a path leaves out everything under it. The same paths name the parts of our
checkpoints:

    state/model/<parameter>  one model weight, which keeps the new model's init (Composer's HF wrapper adds
                             'model.' to the names: 'state/model/model.transformer.wte.weight'; both spellings match)
    state/optimizers         the optimizer's state, all of it (a part of it cannot be left out)
    state/timestamp          the training progress: the run starts at batch 0, and with it the data loader
                             position and the RNG states, which only make sense at the saved batch, start fresh
    state/dataset_state      the data loader position
    rng                      the random generators' states (reseeded from seed, rank and batch instead)

Paths of Composer's state that our checkpoints do not hold (state/schedulers: the schedule is a function of the
timestamp; state/rank_zero_seed, state/algorithms, state/callbacks, ...) are accepted and leave out nothing. A
pattern that matches none of these is refused, so a typo cannot silently load everything.
Autoresume ignores load_ignore_keys: resuming a run restores all of that run's own state, as far as its checkpoints
hold it. A checkpoint saved without some weights loads (and autoresumes) only with load_strict_model_weights: false;
one saved without the optimizer state resumes with a fresh optimizer; one saved without its timestamp resumes from
batch 0 with the saved weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from llmfoundry.config.validation import ConfigError

# Composer path -> the part of our checkpoint it names (DCP key, or 'rng' for the per-rank generator states)
PARTS = {'state/optimizers': 'optim', 'state/timestamp': 'timestamp', 'state/dataset_state': 'loader', 'rng': 'rng'}
# Composer paths with nothing in our checkpoints
COMPOSER_ONLY = ('state/schedulers', 'state/rank_zero_seed', 'state/algorithms', 'state/callbacks',
                 'state/integrations', 'state/metadata', 'state/run_name', 'state/train_metrics',
                 'state/eval_metrics', 'state/precision', 'state/device_train_microbatch_size')
MODEL = 'state/model'


@dataclass(frozen=True)
class Ignored:
    """What a load leaves out: model weights by name, and whole parts (PARTS' values)."""

    weights: frozenset[str] = frozenset()
    parts: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.weights or self.parts)


def _covers(pattern: str, path: str) -> bool:
    """Whether `pattern` matches `path` or one of its ancestors (then Composer leaves the whole subtree out)."""
    steps = path.split('/')
    return any(fnmatchcase('/'.join(steps[:end]), pattern) for end in range(1, len(steps) + 1))


def _covers_part(pattern: str, path: str, optimizer_name: str) -> bool:
    """Whether `pattern` leaves out all of a part: the part itself, its children ('state/optimizers/*') or, for
    the optimizer, Composer's entry under the optimizer's class name ('state/optimizers/DecoupledAdamW')."""
    children = [f'{path}/*'] + ([f'{path}/{optimizer_name}'] if path == 'state/optimizers' else [])
    return _covers(pattern, path) or any(fnmatchcase(child, pattern) for child in children)


def resolve(patterns: Iterable[str], weight_names: Iterable[str], optimizer_name: str,
            key: str = 'load_ignore_keys') -> Ignored:
    """The weights and parts that the patterns of the setting `key` leave out of the checkpoint of a model with these
    weight names."""
    names = list(weight_names)
    weights: set[str] = set()
    parts: set[str] = set()
    for index, pattern in enumerate(patterns):
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f'{key}[{index}] must be a non-empty path pattern, got {pattern!r}.')
        matched_weights = {name for name in names
                           if _covers(pattern, f'{MODEL}/{name}') or _covers(pattern, f'{MODEL}/model.{name}')}
        matched_parts = {part for path, part in PARTS.items() if _covers_part(pattern, path, optimizer_name)}
        composer_only = any(_covers_part(pattern, path, optimizer_name) for path in COMPOSER_ONLY)
        if not (matched_weights or matched_parts or composer_only):
            raise ConfigError(
                f'{key}[{index}]={pattern!r} matches nothing in the checkpoint. Paths: '
                f"{MODEL}/<weight name> (e.g. '{MODEL}/*wte*'), {', '.join(PARTS)}; a part of the optimizer "
                'state cannot be left out, only all of it (state/optimizers).')
        weights |= matched_weights
        parts |= matched_parts
    if 'timestamp' in parts:
        parts |= {'loader', 'rng'}  # a position and generator states that belong to another batch
    return Ignored(frozenset(weights), frozenset(parts))
