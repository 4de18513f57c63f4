"""MPT: a decoder-only transformer (MosaicML's MPT family) as a transformers PreTrainedModel.

Parameter names follow llm-foundry and transformers' native MPT (transformer.wte, transformer.blocks.N
.{norm_1, attn.Wqkv, attn.out_proj, norm_2, ffn.up_proj, ffn.down_proj}, transformer.norm_f), so their
weights need no renaming (a native MPT config.json still needs converting: llmfoundry.export.load_model).
This file and its siblings are copied verbatim into exported remote-code folders: they import only torch,
transformers and each other.
"""

from __future__ import annotations

import contextlib
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .attention import (
    AttentionContext,
    GroupedQueryAttention,
    flash_features_needed,
    flex_block_mask,
    resolve_attn_impl,
)
from .configuration_mpt import MPTConfig
from .layers import build_ffn, build_norm
from .param_init import init_module
from .position import alibi_slopes, rotary_cos_sin, rotary_inverse_frequencies


class MPTBlock(nn.Module):
    """Pre-norm block: x + attn(norm_1(x)), then + ffn(norm_2(x))."""

    def __init__(self, config: MPTConfig, layer_idx: int) -> None:
        super().__init__()
        bias = not config.no_bias
        self.norm_1 = build_norm(config.norm_type, config.d_model, config.norm_eps, bias=bias)
        self.attn = GroupedQueryAttention(config, layer_idx)
        self.norm_2 = build_norm(config.norm_type, config.d_model, config.norm_eps, bias=bias)
        self.ffn = build_ffn(config)
        self.ffn.down_proj.is_residual = True
        self.resid_attn_dropout = nn.Dropout(config.resid_pdrop)
        self.resid_ffn_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor, ctx: AttentionContext, cache: Cache | None = None) -> torch.Tensor:
        x = x + self.resid_attn_dropout(self.attn(self.norm_1(x), ctx, cache))
        return x + self.resid_ffn_dropout(self.ffn(self.norm_2(x)))


class MPTModel(nn.Module):
    """Embeddings, blocks and final norm; returns hidden states."""

    def __init__(self, config: MPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        if config.learned_pos_emb:
            self.wpe = nn.Embedding(config.max_seq_len, config.d_model)
        self.emb_drop = nn.Dropout(config.emb_pdrop)
        self.blocks = nn.ModuleList(MPTBlock(config, i) for i in range(config.n_layers))
        self.norm_f = build_norm(config.norm_type, config.d_model, config.norm_eps, bias=not config.no_bias)
        self.gradient_checkpointing = False  # transformers' gradient_checkpointing_enable() flips this

    def _context(self, input_ids: torch.Tensor, attention_mask, sequence_id, position_ids, past_len: int):
        config, attn = self.config, self.config.attn_config
        batch, seq = input_ids.shape
        device = input_ids.device
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # no padding: lets the kernels skip the per-row mask
        if attention_mask is not None and attention_mask.shape[1] != past_len + seq:
            raise ValueError(
                f'attention_mask covers {attention_mask.shape[1]} positions but past + input is {past_len + seq}.'
            )
        if sequence_id is not None and not attn['attn_uses_sequence_id']:
            sequence_id = None  # as in llm-foundry: packed documents attend to each other unless configured
        if sequence_id is not None and past_len:
            raise ValueError('sequence_id cannot be combined with past_key_values (it masks whole packed rows).')
        rotary = None
        if attn['rope']:
            if position_ids is None:
                position_ids = torch.arange(past_len, past_len + seq, device=device).expand(batch, seq)
            inv_freq = rotary_inverse_frequencies(
                config.resolved_head_dim, attn['rope_theta'], attn['rope_hf_config'], config.max_seq_len,
                int(position_ids.max()) + 1, device=device,
            )
            rotary = rotary_cos_sin(inv_freq, position_ids)
        ctx = AttentionContext(
            query_len=seq,
            past_len=past_len,
            alibi_slopes=alibi_slopes(config.n_heads, attn['alibi_bias_max'], device) if attn['alibi'] else None,
            rotary=rotary,
            key_padding_mask=None if attention_mask is None else attention_mask.bool(),
            sequence_id=sequence_id,
            sliding_window=attn['sliding_window_size'],
            softcap=attn['attn_logit_softcapping'],
            impl=attn['attn_impl'],
        )
        ctx.impl = resolve_attn_impl(attn['attn_impl'], device, decoding=past_len > 0,
                                     dropout=self.training and attn['attn_pdrop'] > 0, needs=flash_features_needed(ctx))
        if ctx.impl == 'flex':  # once per forward, outside the (compiled) blocks
            ctx.block_mask = flex_block_mask(ctx, batch, device)
        return ctx

    def _embed(self, input_ids: torch.Tensor, position_ids, past_len: int) -> torch.Tensor:
        x = self.wte(input_ids)
        if self.config.learned_pos_emb:
            seq = input_ids.shape[1]
            if past_len + seq > self.config.max_seq_len:
                raise ValueError(
                    f'Input of {past_len + seq} tokens exceeds max_seq_len={self.config.max_seq_len}: learned '
                    'position embeddings cannot extrapolate. Shorten the input, raise max_seq_len, or use '
                    'attn_config.alibi (which extrapolates).'
                )
            if position_ids is None:
                position_ids = torch.arange(past_len, past_len + seq, device=input_ids.device)[None]
            x = x + self.wpe(position_ids)
        fraction = self.config.embedding_fraction
        if fraction < 1:  # scales the embedding's gradient only; forward values are unchanged
            x = x * fraction + x.detach() * (1 - fraction)
        return self.emb_drop(x)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        sequence_id: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool = False,
    ) -> BaseModelOutputWithPast:
        checkpointing = self.gradient_checkpointing and self.training
        if use_cache and past_key_values is None and not checkpointing:
            past_key_values = DynamicCache()
        if not use_cache or checkpointing:
            past_key_values = None
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
        ctx = self._context(input_ids, attention_mask, sequence_id, position_ids, past_len)
        x = self._embed(input_ids, position_ids, past_len)
        run_block = partial(checkpoint, use_reentrant=False) if checkpointing else (lambda f, *a: f(*a))
        for block in self.blocks:
            x = run_block(block, x, ctx, past_key_values)
        return BaseModelOutputWithPast(last_hidden_state=self.norm_f(x), past_key_values=past_key_values)


class MPTPreTrainedModel(PreTrainedModel):
    config_class = MPTConfig
    base_model_prefix = 'transformer'
    supports_gradient_checkpointing = True
    _no_split_modules = ['MPTBlock']
    _supports_cache_class = True

    def _init_weights(self, module: nn.Module) -> None:
        # transformers calls this per module; our init needs the module's full name (see param_init).
        names = getattr(self, '_module_names', None)
        if names is None or id(module) not in names:
            self._module_names = names = {id(m): n for n, m in self.named_modules()}
        if id(module) in names:
            init_module(module, names[id(module)], self.config, self.init_seed)

    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        """Initialise every (non-meta) parameter from `seed` (default: the seed drawn at construction)."""
        if seed is not None:
            self.init_seed = seed
        for name, module in self.named_modules():
            init_module(module, name, self.config, self.init_seed)


class MPTForCausalLM(MPTPreTrainedModel, GenerationMixin):
    """MPT with a language-modelling head (tied to the input embedding unless tie_word_embeddings is false)."""

    def __init__(self, config: MPTConfig) -> None:
        super().__init__(config)
        # One draw from torch's global generator: the same torch.manual_seed gives the same weights,
        # whether the model is built on cpu or on meta and materialised later.
        self.init_seed = int(torch.randint(0, 2**62, (1,), device='cpu').item())
        device = torch.device('meta') if config.init_device in ('meta', 'mixed') else contextlib.nullcontext()
        with device:
            self.transformer = MPTModel(config)
            if not config.tie_word_embeddings:
                self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.transformer.wte = value

    def get_output_embeddings(self) -> nn.Linear | None:
        return getattr(self, 'lm_head', None)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        head = self.lm_head.weight if hasattr(self, 'lm_head') else self.transformer.wte.weight
        logits = F.linear(hidden, head)
        scale = self.config.resolved_logit_scale
        if scale is not None:
            logits = logits * scale
        cap = self.config.final_logit_softcapping
        if cap is not None:
            logits = cap * torch.tanh(logits / cap)
        return logits

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        sequence_id: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        past_key_values: Cache | tuple | None = None,
        use_cache: bool | None = None,
        position_ids: torch.Tensor | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int = 0,
        **generation_kwargs,  # cache_position etc. from generate(); not needed here
    ) -> CausalLMOutputWithPast:
        """Logits for every position (`logits_to_keep` > 0: only the last that many, as in transformers); with
        `labels` (input_ids with -100 where no loss is wanted) also the mean next-token cross-entropy over target
        tokens. Labels are shifted here, as in transformers."""
        if labels is not None and logits_to_keep:
            raise ValueError('labels need the logits of every position: leave logits_to_keep at 0.')
        if isinstance(past_key_values, (tuple, list)):
            legacy = past_key_values
            past_key_values = DynamicCache()
            for layer_idx, (k, v) in enumerate(legacy):
                past_key_values.update(k, v, layer_idx)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        out = self.transformer(
            input_ids, attention_mask=attention_mask, sequence_id=sequence_id, position_ids=position_ids,
            past_key_values=past_key_values, use_cache=use_cache or past_key_values is not None,
        )
        logits = self.logits(out.last_hidden_state[:, -logits_to_keep:])  # -0: every position
        loss = None
        if labels is not None:
            # Shift the labels, not the logits (no copy of batch x seq x vocab); at least float32, since
            # cross-entropy over a large vocabulary loses precision in half types.
            targets = F.pad(labels[:, 1:], (0, 1), value=-100).to(logits.device)
            wide = logits.flatten(0, 1).to(torch.promote_types(logits.dtype, torch.float32))
            loss = F.cross_entropy(wide, targets.flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=out.past_key_values)
