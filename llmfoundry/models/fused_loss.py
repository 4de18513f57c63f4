"""`model.loss_fn: fused_crossentropy`: the training loss computed inside the model's forward by chunked_ce.py, so
the (tokens x vocab) logits are never materialised.

`install_fused_loss(model)` adds a keyword to the model's call: `model(input_ids=..., fused_loss_labels=labels)`
returns a `TokenLoss` (summed loss, correct argmax count) instead of the model's output; without that keyword the
model behaves as before (evaluation and generation keep their full logits). It is done with module hooks rather
than a wrapper so that parameter names, checkpoints and exports do not change, and so that the loss runs *inside*
the root module's call: FSDP2's root hooks have the LM head's weight (a DTensor at rest, the tied wte for MPT)
all-gathered there, DDP's forward sees it, and the gradient flows back through the same hooks as the logits would.
The hooks are installed before parallelisation, so FSDP2's own forward hook runs after ours.

How: a pre-hook takes the labels out of the call and asks for `logits_to_keep=1` (the head then computes one
position), a hook on the base model (`model.base_model`, transformers' decoder) keeps its last hidden state, and
the model's forward hook replaces the output with the chunked loss of that hidden state.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, NamedTuple

import torch
from torch import nn

from .chunked_ce import HeadTransform, chunked_cross_entropy

__all__ = ['LABELS_KWARG', 'TokenLoss', 'has_fused_loss', 'install_fused_loss']

log = logging.getLogger(__name__)

LABELS_KWARG = 'fused_loss_labels'
_ATTR = 'llmfoundry_fused_loss'


class TokenLoss(NamedTuple):
    """What a model with the fused loss returns for `fused_loss_labels`: float32 summed loss over target tokens and
    the number of those whose argmax prediction is the label (for TokenAccuracy)."""

    loss_sum: torch.Tensor
    correct: torch.Tensor


def _head_weight(model: nn.Module) -> nn.Parameter | None:
    """The LM head's weight, or None when the head is not a plain bias-free projection we can reproduce."""
    head = model.get_output_embeddings() if hasattr(model, 'get_output_embeddings') else None
    if head is None and getattr(model.config, 'tie_word_embeddings', False):
        head = model.get_input_embeddings()  # MPT's tied head has no module of its own
    if type(head) not in (nn.Linear, nn.Embedding) or getattr(head, 'bias', None) is not None:
        return None
    return head.weight


def _head_transform(config: Any) -> HeadTransform:
    """MPT's resolved_logit_scale or Cohere's logit_scale; Gemma 2's (and MPT's) final_logit_softcapping."""
    scale = getattr(config, 'resolved_logit_scale', getattr(config, 'logit_scale', None))
    return HeadTransform(scale=scale, softcap=getattr(config, 'final_logit_softcapping', None))


def _unsupported_reason(model: nn.Module) -> str | None:
    if 'logits_to_keep' not in inspect.signature(model.forward).parameters:
        return 'its forward has no logits_to_keep'
    if getattr(model, 'base_model', model) is model:
        return 'it has no base model returning the last hidden state'
    if _head_weight(model) is None:
        return 'its output head is not a bias-free linear layer'
    return None


class _FusedLoss:
    """The hooks' state for one call: labels taken out of the call, then the base model's last hidden state."""

    def __init__(self, model: nn.Module, z_loss: float) -> None:
        self.transform = _head_transform(model.config)
        self.z_loss = z_loss
        self.labels: torch.Tensor | None = None
        self.hidden: torch.Tensor | None = None

    def take_labels(self, model: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        self.labels = kwargs.pop(LABELS_KWARG, None)
        if self.labels is not None:
            kwargs['logits_to_keep'] = 1
        return args, kwargs

    def keep_hidden(self, base: nn.Module, args: tuple, output: Any) -> None:
        if self.labels is not None:
            self.hidden = output[0]  # last_hidden_state, as a ModelOutput or a tuple

    def loss(self, model: nn.Module, args: tuple, output: Any) -> Any:
        if self.labels is None:
            return output
        hidden, labels = self.hidden, self.labels
        self.hidden = self.labels = None
        # Read at call time: under FSDP2 this is the all-gathered weight the root's pre-forward swapped in.
        loss_sum, correct = chunked_cross_entropy(hidden, _head_weight(model), labels, head=self.transform,
                                                  z_loss=self.z_loss)
        return TokenLoss(loss_sum, correct)


def install_fused_loss(model: nn.Module, z_loss: float = 0.0) -> bool:
    """Add the `fused_loss_labels` keyword to `model`'s call; False (and a warning) when the model's head or forward
    does not allow it, and the trainer then computes torch's cross-entropy on the full logits."""
    reason = _unsupported_reason(model)
    if reason is not None:
        log.warning("model.loss_fn='fused_crossentropy' is not applied to %s (%s): computing torch's "
                    'cross-entropy on the full logits.', type(model).__name__, reason)
        return False
    state = _FusedLoss(model, z_loss)
    model.register_forward_pre_hook(state.take_labels, with_kwargs=True)
    model.base_model.register_forward_hook(state.keep_hidden)
    model.register_forward_hook(state.loss)
    setattr(model, _ATTR, state)
    return True


def has_fused_loss(model: nn.Module) -> bool:
    """Whether `model` (the unwrapped model, not its DDP wrapper) takes `fused_loss_labels`."""
    return getattr(model, _ATTR, None) is not None
