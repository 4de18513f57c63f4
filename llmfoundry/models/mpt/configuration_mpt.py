"""MPTConfig: llm-foundry's MPT hyperparameters, validated strictly.

Every key llm-foundry's MPTConfig or a published mosaicml MPT config.json carries is honoured, mapped
onto its modern meaning, or accepted only at its no-op value. Unknown keys and invalid combinations
raise a ValueError that names the key path, the bad value and what is allowed.

This file is copied verbatim into exported remote-code folders: it imports only torch-free stdlib
modules and transformers.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import math
from typing import Any

from transformers import PretrainedConfig

ATTN_CONFIG_DEFAULTS: dict[str, Any] = {
    'attn_type': 'multihead_attention',
    'attn_pdrop': 0.0,
    'attn_impl': 'flash',
    'qk_ln': False,
    'qk_gn': False,
    'fused_qkv': True,
    'clip_qkv': None,
    'softmax_scale': None,
    'attn_uses_sequence_id': False,
    'sliding_window_size': -1,
    'attn_logit_softcapping': None,
    'alibi': False,
    'alibi_bias_max': 8,
    'rope': False,
    'rope_theta': 10000,
    'rope_impl': 'dail',
    'rope_dail_config': {'type': 'original', 'pos_idx_in_fp32': True, 'xpos_scale_base': 512},
    'rope_hf_config': {'type': 'no_scaling', 'factor': 1.0},
    'kv_n_heads': 1,
    'nope': False,
    'kv_dim': None,
    'attn_temperature_tuning': {'floor_scale': 8192, 'attn_scale': 0.0},
}

FFN_CONFIG_DEFAULTS: dict[str, Any] = {
    'ffn_type': 'mptmlp',
    'ffn_hidden_size': None,
    'ffn_act_fn': None,  # None means exact GELU
}

INIT_CONFIG_DEFAULTS: dict[str, Any] = {
    'name': 'kaiming_normal_',
    'fan_mode': 'fan_in',
    'init_nonlinearity': 'relu',
    'init_div_is_residual': True,
    'emb_init_std': None,
    'emb_init_uniform_lim': None,
    'init_std': None,
    'init_gain': 0.0,
}

ATTN_TYPES = ('multihead_attention', 'multiquery_attention', 'grouped_query_attention')
ATTN_IMPLS = ('torch', 'flex', 'flash')
NORM_TYPES = ('layernorm', 'low_precision_layernorm', 'rmsnorm', 'low_precision_rmsnorm')
FFN_TYPES = ('mptmlp', 'mptglu')
INIT_NAMES = (
    'kaiming_normal_', 'kaiming_uniform_', 'xavier_uniform_', 'xavier_normal_',
    'small_init_', 'neox_init_', 'baseline_', 'default_',
)
ROPE_IMPLS = ('dail', 'hf')
ROPE_SCALING_TYPES = ('no_scaling', 'linear', 'dynamic', 'llama3')
LLAMA3_SCALING_KEYS = ('low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings')
ACTIVATIONS = ('gelu', 'silu', 'relu')

# Keys accepted only for compatibility with older configs; they change nothing.
_IGNORED_TOP_LEVEL = ('verbose', 'initializer_range')
# Keys that transformers writes into every config.json, beyond PretrainedConfig's own attributes.
_TRANSFORMERS_EXTRA_KEYS = (
    'auto_map', 'torch_dtype', 'dtype', 'transformers_version', '_name_or_path', '_commit_hash',
    'model_type', 'num_labels', 'use_return_dict', '_attn_implementation_autoset', 'attn_implementation',
    # transformers 5 passes name_or_path, and its PretrainedConfig no longer declares the token ids
    'name_or_path', 'bos_token_id', 'eos_token_id', 'pad_token_id',
    # ... nor these, which transformers 4.x's to_dict() writes (llm-foundry 0.22 pins 4.51): plain metadata here.
    'add_cross_attention', 'bad_words_ids', 'begin_suppress_tokens', 'cross_attention_hidden_size',
    'decoder_start_token_id', 'diversity_penalty', 'do_sample', 'early_stopping', 'encoder_no_repeat_ngram_size',
    'exponential_decay_length_penalty', 'finetuning_task', 'forced_bos_token_id', 'forced_eos_token_id',
    'is_decoder', 'length_penalty', 'max_length', 'min_length', 'no_repeat_ngram_size', 'num_beam_groups',
    'num_beams', 'num_return_sequences', 'output_scores', 'prefix', 'pruned_heads', 'remove_invalid_values',
    'repetition_penalty', 'return_dict_in_generate', 'sep_token_id', 'suppress_tokens', 'task_specific_params',
    'temperature', 'tf_legacy_loss', 'tie_encoder_decoder', 'tokenizer_class', 'top_k', 'top_p', 'torchscript',
    'typical_p', 'use_bfloat16',
)


# The model_type of the remote-code folders llmfoundry exports (their copy of this file says it, not 'mpt').
REMOTE_MODEL_TYPE = 'llmfoundry_mpt'


def config_kind(config: dict[str, Any]) -> str:
    """Whose model a config.json describes: 'llmfoundry' (llm-foundry's or mosaicml's MPT, or one of our remote-code
    exports), 'native_mpt' (transformers' MptForCausalLM: the same model_type 'mpt', other semantics), 'llama',
    or 'other'."""
    model_type, architectures = config.get('model_type'), config.get('architectures') or []
    if model_type == REMOTE_MODEL_TYPE:
        return 'llmfoundry'
    if model_type == 'mpt':
        if 'MptForCausalLM' in architectures:
            return 'native_mpt'
        if 'auto_map' in config or 'MPTForCausalLM' in architectures or 'ffn_config' in config:
            return 'llmfoundry'
        return 'native_mpt'
    return 'llama' if model_type == 'llama' else 'other'


def _not_llmfoundry_mpt(path: Any, config: dict[str, Any]) -> ValueError:
    what = {
        'native_mpt': "transformers' native MPT (MptForCausalLM), whose config.json MPTConfig would misread",
        'llama': 'a Llama model',
    }.get(config_kind(config), f"a model of model_type {config.get('model_type')!r}")
    return ValueError(
        f"{path} holds {what}, not llm-foundry's MPT, so MPTForCausalLM.from_pretrained does not load it. "
        'Load it with llmfoundry.export.load_model(path) (which reads native MPT and Llama folders too), or '
        'convert it once with `llmfoundry convert from-hf SRC OUT`.'
    )


def _transformers_keys() -> frozenset[str]:
    params = set(inspect.signature(PretrainedConfig.__init__).parameters) - {'self', 'kwargs'}
    return frozenset(params | set(PretrainedConfig().to_dict()) | set(_TRANSFORMERS_EXTRA_KEYS))


def _fail(path: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f'MPTConfig: {path}={value!r} is invalid; allowed: {allowed}.')


def _unsupported(path: str, value: Any, why: str = '') -> ValueError:
    return ValueError(f'MPTConfig: not supported: {path}={value!r}. {why}'.rstrip())


def _unknown_key(key: str, allowed: list[str] | tuple[str, ...], path: str = '') -> ValueError:
    """'unknown key' with the closest valid keys; the whole list only when it is short enough to read."""
    close = difflib.get_close_matches(key, allowed, n=3)
    hint = f" Did you mean '{close[0]}'?" if len(close) == 1 else (
        f" Did you mean one of {', '.join(repr(c) for c in close)}?" if close else '')
    listing = f" Valid keys here: {', '.join(sorted(allowed))}." if len(allowed) <= 12 or not close else ''
    return ValueError(f"MPTConfig: unknown key '{path}{key}'.{hint}{listing}")


def _check_keys(section: dict[str, Any], allowed: list[str] | tuple[str, ...], path: str) -> None:
    for key in section:
        if key not in allowed:
            raise _unknown_key(key, allowed, path)


def _merge(defaults: dict[str, Any], given: dict[str, Any] | None, path: str) -> dict[str, Any]:
    given = dict(given or {})
    _check_keys(given, tuple(defaults), path)
    merged = copy.deepcopy(defaults)
    merged.update(given)
    return merged


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class MPTConfig(PretrainedConfig):
    """Hyperparameters of an MPT model, with llm-foundry's key names and defaults."""

    model_type = 'mpt'
    attribute_map = {
        'hidden_size': 'd_model',
        'num_attention_heads': 'n_heads',
        'num_hidden_layers': 'n_layers',
    }

    def __init__(
        self,
        d_model: int = 2048,
        n_heads: int = 16,
        n_layers: int = 24,
        expansion_ratio: float = 4,
        max_seq_len: int = 2048,
        vocab_size: int = 50368,
        resid_pdrop: float = 0.0,
        emb_pdrop: float = 0.0,
        learned_pos_emb: bool = True,
        attn_config: dict[str, Any] | None = None,
        ffn_config: dict[str, Any] | None = None,
        init_device: str = 'cpu',
        logit_scale: float | str | None = None,
        no_bias: bool = False,
        attention_bias: bool | None = None,
        embedding_fraction: float = 1.0,
        norm_type: str = 'low_precision_layernorm',
        norm_eps: float = 1e-05,
        use_cache: bool = False,
        init_config: dict[str, Any] | None = None,
        fc_type: str | dict[str, Any] | None = None,
        tie_word_embeddings: bool = True,
        use_pad_tok_in_ffn: bool = True,
        block_overrides: dict[str, Any] | None = None,
        final_logit_softcapping: float | None = None,
        head_dim: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs = self._absorb_legacy_keys(kwargs, attn_config)
        if 'layer_norm_epsilon' in kwargs:  # transformers' native MPT name for norm_eps
            norm_eps = kwargs.pop('layer_norm_epsilon')
        self.tokenizer_name = kwargs.pop('tokenizer_name', None)
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.expansion_ratio = expansion_ratio
        self.max_seq_len = max_seq_len
        self.vocab_size = vocab_size
        self.resid_pdrop = resid_pdrop
        self.emb_pdrop = emb_pdrop
        self.learned_pos_emb = learned_pos_emb
        self.attn_config = _merge(ATTN_CONFIG_DEFAULTS, self._without_legacy_attn_keys(attn_config), 'attn_config.')
        self.ffn_config = _merge(FFN_CONFIG_DEFAULTS, self._without_fc_type(ffn_config), 'ffn_config.')
        self.init_config = _merge(INIT_CONFIG_DEFAULTS, self._without_verbose(init_config), 'init_config.')
        self.init_device = init_device
        self.logit_scale = logit_scale
        self.no_bias = no_bias
        # Bias of the q/k/v projections only; None follows no_bias. Stored resolved, as llm-foundry stores it, so
        # that config.json reads the same in both.
        self.attention_bias = (not no_bias) if attention_bias is None else attention_bias
        self.embedding_fraction = embedding_fraction
        self.norm_type = norm_type
        self.norm_eps = norm_eps
        self.use_cache = use_cache
        self.use_pad_tok_in_ffn = use_pad_tok_in_ffn
        self.final_logit_softcapping = final_logit_softcapping
        self.head_dim = head_dim
        self._check_noop('fc_type', fc_type, (None, 'torch', {'name': 'torch'}))
        self._check_noop('block_overrides', block_overrides, (None, {}))
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
        self._validate()

    @classmethod
    def get_config_dict(
        cls, pretrained_model_name_or_path: Any, **kwargs: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """transformers' config.json reader (behind every from_pretrained), refusing a folder whose model is not
        llm-foundry's MPT (see `config_kind`): loading it would build the wrong model, so it fails instead."""
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if config_dict and config_kind(config_dict) != 'llmfoundry':
            raise _not_llmfoundry_mpt(pretrained_model_name_or_path, config_dict)
        return config_dict, kwargs

    # ----- legacy keys -------------------------------------------------------------------------
    @staticmethod
    def _absorb_legacy_keys(kwargs: dict[str, Any], attn_config: dict[str, Any] | None) -> dict[str, Any]:
        allowed = _transformers_keys()
        valid_here = sorted(set(inspect.signature(MPTConfig.__init__).parameters) - {'self', 'kwargs'})
        rest = {}
        for key, value in kwargs.items():
            if key in _IGNORED_TOP_LEVEL:
                continue
            if key == 'prefix_lm':
                MPTConfig._check_noop('prefix_lm', value, (False, None))
                continue
            if key in allowed or key in ('tokenizer_name', 'layer_norm_epsilon'):
                rest[key] = value
                continue
            raise _unknown_key(key, valid_here)
        return rest

    @staticmethod
    def _without_legacy_attn_keys(attn_config: dict[str, Any] | None) -> dict[str, Any]:
        attn_config = dict(attn_config or {})
        MPTConfig._check_noop('attn_config.prefix_lm', attn_config.pop('prefix_lm', False), (False, None))
        attn_config.pop('model_type', None)  # transformers' native MptAttentionConfig serialises this key
        return attn_config

    @staticmethod
    def _without_fc_type(ffn_config: dict[str, Any] | None) -> dict[str, Any]:
        ffn_config = dict(ffn_config or {})
        MPTConfig._check_noop('ffn_config.fc_type', ffn_config.pop('fc_type', None), (None, 'torch', {'name': 'torch'}))
        return ffn_config

    @staticmethod
    def _without_verbose(init_config: dict[str, Any] | None) -> dict[str, Any]:
        init_config = dict(init_config or {})
        init_config.pop('verbose', None)
        return init_config

    @staticmethod
    def _check_noop(path: str, value: Any, noop_values: tuple[Any, ...]) -> None:
        if not any(value == ok for ok in noop_values):
            allowed = ', '.join(repr(v) for v in noop_values)
            raise _unsupported(path, value, f'Only the no-op values ({allowed}) are accepted.')

    # ----- validation --------------------------------------------------------------------------
    def _validate(self) -> None:
        for key in ('d_model', 'n_heads', 'n_layers', 'max_seq_len', 'vocab_size'):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise _fail(key, value, 'a positive integer')
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f'MPTConfig: d_model={self.d_model} is not divisible by n_heads={self.n_heads}; '
                    'change one of them or set head_dim explicitly.'
                )
        elif not isinstance(self.head_dim, int) or self.head_dim <= 0:
            raise _fail('head_dim', self.head_dim, 'a positive integer or null')
        if not isinstance(self.attention_bias, bool):
            raise _fail('attention_bias', self.attention_bias, 'true, false or null (follow no_bias)')
        for key in ('resid_pdrop', 'emb_pdrop'):
            if not _is_number(getattr(self, key)) or not 0 <= getattr(self, key) < 1:
                raise _fail(key, getattr(self, key), 'a probability in [0, 1)')
        if not _is_number(self.embedding_fraction) or not 0 < self.embedding_fraction <= 1:
            raise _fail('embedding_fraction', self.embedding_fraction, 'a number in (0, 1]')
        if self.norm_type not in NORM_TYPES:
            raise _fail('norm_type', self.norm_type, ', '.join(NORM_TYPES))
        if not _is_number(self.norm_eps) or self.norm_eps <= 0:
            raise _fail('norm_eps', self.norm_eps, 'a positive number')
        if self.logit_scale is not None and self.logit_scale != 'inv_sqrt_d_model' and not _is_number(self.logit_scale):
            raise _fail('logit_scale', self.logit_scale, "null, a number or 'inv_sqrt_d_model'")
        if self.final_logit_softcapping is not None and not (
            _is_number(self.final_logit_softcapping) and self.final_logit_softcapping > 0
        ):
            raise _fail('final_logit_softcapping', self.final_logit_softcapping, 'null or a positive number')
        if self.init_device not in ('cpu', 'meta', 'mixed') and not str(self.init_device).startswith('cuda'):
            raise _fail('init_device', self.init_device, "'cpu', 'meta', 'mixed' or a CUDA device such as 'cuda'")
        self._check_noop('use_pad_tok_in_ffn', self.use_pad_tok_in_ffn, (True,))
        self._validate_attn()
        self._validate_ffn()
        self._validate_init()
        # As upstream: learned positions are dropped when another position scheme is on.
        a = self.attn_config
        if a['alibi'] or a['rope'] or a['nope']:
            self.learned_pos_emb = False

    def _validate_attn(self) -> None:
        a = self.attn_config
        if a['attn_type'] not in ATTN_TYPES:
            raise _fail('attn_config.attn_type', a['attn_type'], ', '.join(ATTN_TYPES))
        if a['attn_impl'] not in ATTN_IMPLS:
            raise _fail('attn_config.attn_impl', a['attn_impl'], ', '.join(ATTN_IMPLS))
        if a['attn_type'] == 'multihead_attention':
            a['kv_n_heads'] = self.n_heads
        elif a['attn_type'] == 'multiquery_attention':
            a['kv_n_heads'] = 1
        kv = a['kv_n_heads']
        if not isinstance(kv, int) or kv <= 0 or self.n_heads % kv:
            raise _fail('attn_config.kv_n_heads', kv, f'a positive divisor of n_heads={self.n_heads}')
        if not _is_number(a['attn_pdrop']) or not 0 <= a['attn_pdrop'] < 1:
            raise _fail('attn_config.attn_pdrop', a['attn_pdrop'], 'a probability in [0, 1)')
        if a['attn_impl'] == 'flex' and a['attn_pdrop'] > 0:
            raise _unsupported('attn_config.attn_pdrop', a['attn_pdrop'],
                               'FlexAttention has no attention dropout; use attn_impl torch or flash.')
        if a['qk_ln'] and a['qk_gn']:
            raise ValueError('MPTConfig: attn_config.qk_ln and attn_config.qk_gn are exclusive; set one of them.')
        for key in ('clip_qkv', 'softmax_scale', 'attn_logit_softcapping'):
            if a[key] is not None and not (_is_number(a[key]) and a[key] > 0):
                raise _fail(f'attn_config.{key}', a[key], 'null or a positive number')
        window = a['sliding_window_size']
        if not isinstance(window, int) or (window != -1 and window < 0):
            raise _fail('attn_config.sliding_window_size', window, '-1 (off) or a non-negative integer')
        if not _is_number(a['alibi_bias_max']) or a['alibi_bias_max'] <= 0:
            raise _fail('attn_config.alibi_bias_max', a['alibi_bias_max'], 'a positive number')
        if sum(bool(a[k]) for k in ('alibi', 'rope', 'nope')) > 1:
            raise ValueError(
                f"MPTConfig: attn_config.alibi={a['alibi']}, attn_config.rope={a['rope']} and "
                f"attn_config.nope={a['nope']}: choose at most one position scheme."
            )
        self._check_noop('attn_config.kv_dim', a['kv_dim'], (None,))
        tuning = _merge(ATTN_CONFIG_DEFAULTS['attn_temperature_tuning'], a['attn_temperature_tuning'],
                        'attn_config.attn_temperature_tuning.')
        self._check_noop('attn_config.attn_temperature_tuning.attn_scale', tuning['attn_scale'], (0, 0.0))
        a['attn_temperature_tuning'] = tuning
        self._validate_rope()

    def _validate_rope(self) -> None:
        a = self.attn_config
        if a['rope_impl'] not in ROPE_IMPLS:
            raise _fail('attn_config.rope_impl', a['rope_impl'], ', '.join(ROPE_IMPLS))
        if not _is_number(a['rope_theta']) or a['rope_theta'] <= 0:
            raise _fail('attn_config.rope_theta', a['rope_theta'], 'a positive number')
        dail = _merge(ATTN_CONFIG_DEFAULTS['rope_dail_config'], a['rope_dail_config'], 'attn_config.rope_dail_config.')
        if dail['type'] != 'original':
            raise _unsupported('attn_config.rope_dail_config.type', dail['type'], "Only 'original' rotary is built in.")
        a['rope_dail_config'] = dail
        hf = dict(a['rope_hf_config'] or {})
        _check_keys(hf, ('type', 'factor', *LLAMA3_SCALING_KEYS), 'attn_config.rope_hf_config.')
        hf = {'type': 'no_scaling', 'factor': 1.0, **hf}
        if hf['type'] not in ROPE_SCALING_TYPES:
            raise _fail('attn_config.rope_hf_config.type', hf['type'], ', '.join(ROPE_SCALING_TYPES))
        if not _is_number(hf['factor']) or hf['factor'] <= 0:
            raise _fail('attn_config.rope_hf_config.factor', hf['factor'], 'a positive number')
        if hf['type'] == 'llama3':
            missing = [k for k in LLAMA3_SCALING_KEYS if k not in hf]
            if missing:
                raise ValueError(f"MPTConfig: attn_config.rope_hf_config.type='llama3' needs {', '.join(missing)}.")
        if a['rope'] and a['rope_impl'] == 'dail' and hf['type'] != 'no_scaling':
            raise ValueError(
                f"MPTConfig: attn_config.rope_hf_config.type={hf['type']!r} only applies with "
                "attn_config.rope_impl='hf'; set rope_impl: hf or remove the scaling."
            )
        a['rope_hf_config'] = hf

    def _validate_ffn(self) -> None:
        f = self.ffn_config
        if f['ffn_type'] not in FFN_TYPES:
            raise _fail('ffn_config.ffn_type', f['ffn_type'], ', '.join(FFN_TYPES))
        hidden = f['ffn_hidden_size']
        if hidden is not None and (not isinstance(hidden, int) or hidden <= 0):
            raise _fail('ffn_config.ffn_hidden_size', hidden, 'null or a positive integer')
        if not _is_number(self.expansion_ratio) or self.expansion_ratio <= 0:
            raise _fail('expansion_ratio', self.expansion_ratio, 'a positive number')
        if hidden is None and not float(self.d_model * self.expansion_ratio).is_integer():
            raise ValueError(
                f'MPTConfig: d_model * expansion_ratio = {self.d_model * self.expansion_ratio} is not an integer; '
                'set ffn_config.ffn_hidden_size.'
            )
        act = f['ffn_act_fn']
        if act is not None:
            if not isinstance(act, dict) or 'name' not in act:
                raise _fail('ffn_config.ffn_act_fn', act, "null (exact GELU) or a mapping such as {name: silu}")
            _check_keys(act, ('name', 'approximate'), 'ffn_config.ffn_act_fn.')
            if act['name'] not in ACTIVATIONS:
                raise _fail('ffn_config.ffn_act_fn.name', act['name'], ', '.join(ACTIVATIONS))
            if act.get('approximate', 'none') not in ('none', 'tanh') or (
                act.get('approximate', 'none') != 'none' and act['name'] != 'gelu'
            ):
                raise _fail('ffn_config.ffn_act_fn.approximate', act.get('approximate'), "'none', or 'tanh' with gelu")

    def _validate_init(self) -> None:
        i = self.init_config
        if i['name'] not in INIT_NAMES:
            raise _fail('init_config.name', i['name'], ', '.join(INIT_NAMES))
        if i['fan_mode'] not in ('fan_in', 'fan_out'):
            raise _fail('init_config.fan_mode', i['fan_mode'], 'fan_in, fan_out')
        if i['name'] == 'baseline_' and not (_is_number(i['init_std']) and i['init_std'] > 0):
            raise ValueError("MPTConfig: init_config.name='baseline_' needs init_config.init_std (a positive number).")
        div = i['init_div_is_residual']
        if not (isinstance(div, bool) or (_is_number(div) and div > 0)):
            raise _fail('init_config.init_div_is_residual', div, 'true, false or a positive number')
        if i['emb_init_std'] is not None and i['emb_init_uniform_lim'] is not None:
            raise ValueError(
                'MPTConfig: set at most one of init_config.emb_init_std and init_config.emb_init_uniform_lim.'
            )

    # ----- derived values ----------------------------------------------------------------------
    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def kv_n_heads(self) -> int:
        return self.attn_config['kv_n_heads']

    @property
    def ffn_hidden_size(self) -> int:
        hidden = self.ffn_config['ffn_hidden_size']
        return hidden if hidden is not None else int(self.d_model * self.expansion_ratio)

    @property
    def resolved_logit_scale(self) -> float | None:
        if self.logit_scale == 'inv_sqrt_d_model':
            return 1 / math.sqrt(self.d_model)
        return self.logit_scale
