"""The registries: built-ins and plugins are import strings resolved on first lookup; an unknown name is a config
error with the closest names; the modules that moved stay importable, with a DeprecationWarning."""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import EntryPoint

import pytest

from llmfoundry import registry
from llmfoundry.config.validation import ConfigError
from llmfoundry.interfaces import Callback, LoggerDestination
from llmfoundry.models.builders import build_model
from llmfoundry.registry import Registry

ALL = [registry.models, registry.dataloaders, registry.optimizers, registry.schedulers, registry.callbacks,
       registry.loggers, registry.preprocessors, registry.icl_task_types, registry.evaluators]


@pytest.mark.parametrize('reg', ALL, ids=lambda reg: reg.name)
def test_every_built_in_entry_resolves(reg):
    for name in reg.names():
        assert callable(reg.get(name, f'{reg.name}.name'))


def test_callbacks_and_loggers_implement_the_interfaces():
    assert all(issubclass(registry.callbacks.get(name, 'x'), Callback) for name in registry.callbacks.names())
    assert all(issubclass(registry.loggers.get(name, 'x'), LoggerDestination) for name in registry.loggers.names())


def test_unknown_names_say_where_and_suggest():
    with pytest.raises(ConfigError) as caught:
        registry.optimizers.get_named({'name': 'decoupled_adam'}, 'optimizer')
    assert str(caught.value) == ("unknown optimizer.name='decoupled_adam'; did you mean 'decoupled_adamw'? "
                                 '(registered: adamw, decoupled_adamw, decoupled_lionw).')
    with pytest.raises(ConfigError, match="unknown key 'callbacks.speed_monitr'; did you mean 'speed_monitor'\\?"):
        registry.callbacks.build('speed_monitr', {}, 'callbacks.speed_monitr')
    with pytest.raises(ConfigError, match='model.name is required \\(registered: hf_causal_lm, mpt_causal_lm\\)'):
        registry.models.get_named({'d_model': 8}, 'model')
    with pytest.raises(ConfigError, match='scheduler must be a mapping with a `name` key'):
        registry.schedulers.get_named('cosine_with_warmup', 'scheduler')
    with pytest.raises(ConfigError, match="unknown train_loader.name='finetune'; did you mean 'finetuning'\\? "
                                          "\\(registered: finetuning, text\\)"):
        registry.dataloaders.get_named({'name': 'finetune'}, 'train_loader')


def test_entry_point_plugins_and_code_resolve_the_same_way(tmp_path, monkeypatch):
    (tmp_path / 'my_plugin_pkg.py').write_text('def build(**kwargs):\n    return ("plugin", kwargs)\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    group = 'llmfoundry.widgets'
    plugins = [EntryPoint('plugged', 'my_plugin_pkg:build', group),
               EntryPoint('builtin', 'my_plugin_pkg:shadowed', group)]  # a built-in name wins over a plugin's
    monkeypatch.setattr(registry, 'entry_points', lambda group: plugins if group == 'llmfoundry.widgets' else [])
    widgets = Registry('widgets', {'builtin': 'my_plugin_pkg:build'})
    assert widgets.names() == ['builtin', 'plugged']
    assert 'my_plugin_pkg' not in sys.modules  # listing imports nothing; a lookup imports its entry
    assert widgets.build('plugged', {'size': 2}, 'widgets.plugged') == ('plugin', {'size': 2})
    assert widgets.get('builtin', 'widgets.name') is widgets.get('plugged', 'widgets.name')
    widgets.register('coded')(lambda: 'coded')
    assert widgets.get('coded', 'widgets.name')() == 'coded'
    with pytest.raises(ValueError, match="'plugged' is already registered"):
        widgets.register('plugged')(lambda: None)


def test_keyword_arguments_are_checked_against_the_builder():
    with pytest.raises(ConfigError, match="unknown key 'callbacks.lr_monitor.interval'"):
        registry.callbacks.build('lr_monitor', {'interval': '1ba'}, 'callbacks.lr_monitor')


@pytest.mark.parametrize(('old', 'moved'), [
    ('llmfoundry.train.events', {'Callback': Callback, 'LoggerDestination': LoggerDestination,
                                 'callbacks': registry.callbacks, 'loggers': registry.loggers}),
    ('llmfoundry.models.registry', {'build_model': build_model, 'models': registry.models}),
])
def test_moved_modules_still_import_with_a_deprecation_warning(monkeypatch, old, moved):
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=f'{old} is deprecated'):
        module = importlib.import_module(old)
    assert all(getattr(module, name) is value for name, value in moved.items())
