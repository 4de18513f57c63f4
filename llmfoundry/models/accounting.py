"""Parameter counts and training FLOPs per token of MPT models, computed from the config alone.

Why analytic: the trainer needs both numbers for models that are never materialised on one machine
(a 70B model built on the meta device, then sharded), for MFU and for sizing runs from a YAML. The tests
check every formula here against a meta-device model's numel and against torch's FlopCounterMode.
"""

from __future__ import annotations

from torch import nn

from .mpt.configuration_mpt import MPTConfig


def _norm_params(config: MPTConfig, size: int) -> int:
    """Weight, plus a bias for the LayerNorm family unless no_bias (RMSNorm never has a bias)."""
    has_bias = not config.no_bias and not config.norm_type.endswith('rmsnorm')
    return size * (2 if has_bias else 1)


def _block_matmul_weights(config: MPTConfig) -> int:
    """Weights of one block's linear layers: the numbers that are multiplied with every token."""
    q_size = config.n_heads * config.resolved_head_dim
    kv_size = config.kv_n_heads * config.resolved_head_dim
    attn = config.d_model * (q_size + 2 * kv_size) + q_size * config.d_model
    n_ffn_mats = 3 if config.ffn_config['ffn_type'] == 'mptglu' else 2  # GLU adds gate_proj
    return attn + n_ffn_mats * config.d_model * config.ffn_hidden_size


def _block_other_params(config: MPTConfig) -> int:
    """Biases of the linear layers and every norm weight/bias of one block."""
    attn = config.attn_config
    q_size = config.n_heads * config.resolved_head_dim
    kv_size = config.kv_n_heads * config.resolved_head_dim
    total = 2 * _norm_params(config, config.d_model)  # norm_1, norm_2
    if attn['qk_gn']:  # one norm over head_dim shared by all heads
        total += 2 * _norm_params(config, config.resolved_head_dim)
    elif attn['qk_ln']:
        total += _norm_params(config, q_size) + _norm_params(config, kv_size)
    if config.attention_bias:  # Wqkv (or Wq/Wk/Wv); resolved from no_bias when the YAML leaves it null
        total += q_size + 2 * kv_size
    if not config.no_bias:
        n_ffn_mats_in = 2 if config.ffn_config['ffn_type'] == 'mptglu' else 1
        total += config.d_model  # out_proj
        total += n_ffn_mats_in * config.ffn_hidden_size + config.d_model  # up (+ gate) and down_proj
    return total


def _embedding_params(config: MPTConfig) -> int:
    """Input embedding tables: tokens, plus learned positions when enabled."""
    total = config.vocab_size * config.d_model
    if config.learned_pos_emb:
        total += config.max_seq_len * config.d_model
    return total


def _count_config(config: MPTConfig, exclude_embeddings: bool) -> int:
    per_block = _block_matmul_weights(config) + _block_other_params(config)
    total = config.n_layers * per_block + _norm_params(config, config.d_model)  # blocks + norm_f
    if not config.tie_word_embeddings:
        total += config.vocab_size * config.d_model  # lm_head (bias-free)
    if not exclude_embeddings:
        total += _embedding_params(config)
    return total


def _count_model(model: nn.Module, trainable_only: bool, exclude_embeddings: bool) -> int:
    excluded: set[int] = set()
    if exclude_embeddings:
        base = getattr(model, 'transformer', model)
        for name in ('wte', 'wpe'):
            if hasattr(base, name):
                excluded.add(id(getattr(base, name).weight))
    # model.parameters() yields a tied weight once, so a tied head is not counted twice.
    return sum(
        p.numel() for p in model.parameters()
        if id(p) not in excluded and (p.requires_grad or not trainable_only)
    )


def count_parameters(
    config_or_model: MPTConfig | nn.Module,
    *,
    trainable_only: bool = False,
    exclude_embeddings: bool = False,
) -> int:
    """Number of parameters of an MPT model, each shared (tied) tensor counted once.

    From an `MPTConfig` the count is analytic (no model is built; every parameter is trainable). From a
    model the parameters are summed, so frozen ones can be left out with `trainable_only` (e.g. PEFT).

    `exclude_embeddings` leaves out the input tables (token embedding `wte`, learned positions `wpe`):
    the "non-embedding" N of scaling laws. With tied embeddings the LM head is `wte` and goes too; an
    untied `lm_head` is a separate matmul weight and stays counted.
    """
    if isinstance(config_or_model, MPTConfig):
        return _count_config(config_or_model, exclude_embeddings)
    return _count_model(config_or_model, trainable_only, exclude_embeddings)


def flops_per_token(config: MPTConfig, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per token at sequence length `seq_len`.

    Forward FLOPs per token = 2 * M + 4 * n_layers * seq_len * (n_heads * head_dim), where
      - M counts the weights of every matmul a token goes through: per block Wqkv
        (d_model x (n_heads + 2 kv_n_heads) head_dim, so GQA/MQA shrink it), out_proj, and the FFN's
        up/down (plus gate for mptglu) of ffn_hidden_size; and the LM head d_model x vocab_size,
        which costs FLOPs even when its weight is tied to the (lookup-only, FLOP-free) embedding;
      - 2 FLOPs per multiply-add;
      - the attention term is Q K^T and P V, each 2 * seq_len * head_dim per query head, over the
        full seq_len x seq_len score matrix: causal masking is not discounted (llm-foundry/Composer's
        and PaLM's MFU convention), and GQA does not shrink it (every query head attends).
    Training = 3 x forward (the backward pass computes gradients for both inputs and weights).
    Biases, norms, activations, softmax and the loss are left out: they are O(d_model) per token,
    negligible, and not run on the matrix units that MFU measures. Summed over a batch this matches
    torch's FlopCounterMode on a forward + backward pass exactly (see tests/models/test_accounting.py).
    """
    matmul_weights = config.n_layers * _block_matmul_weights(config) + config.d_model * config.vocab_size
    attention = 2 * 2 * config.n_layers * seq_len * config.n_heads * config.resolved_head_dim
    return 3.0 * (2 * matmul_weights + attention)
