"""Imports go one way: a module never imports one of a higher layer, not even lazily inside a function.

LAYERS is the map of the package (docs/ARCHITECTURE.md draws it): config at the bottom, then the registries,
interfaces and storage every other part builds on, then models/data/optim, the trainer, what plugs into a run,
and the commands on top. Modules of one layer may import each other.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'llmfoundry'

LAYERS: dict[str, int] = {
    'config': 0, 'third_party_logs': 0,
    'registry': 1, 'interfaces': 1, 'storage': 1,
    'models': 2, 'data': 2, 'optim': 2,
    'train': 3,
    'callbacks': 4, 'loggers': 4, 'export': 4, 'eval': 4, 'inference': 4,
    'cli': 5, 'quickstart': 5,
}


def component(module: str) -> str:
    """'llmfoundry.train.checkpoint.layout' -> 'train'."""
    return module.split('.')[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every llmfoundry import in the file, function-level ones included."""
    name = module_name(path)
    package = name if path.name == '__init__.py' else name.rsplit('.', 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')[: len(package.split('.')) - node.level + 1]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            found += [(node.lineno, f'{target}.{alias.name}' if not node.module else target) for alias in node.names]
    return [(line, target) for line, target in found if target.startswith('llmfoundry.')]


def python_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob('*.py') if p.parent != PACKAGE or p.name != '__init__.py')


def test_every_component_has_a_layer():
    components = {component(module_name(p)) for p in python_files()}
    assert components <= set(LAYERS), f'add these to LAYERS (and docs/ARCHITECTURE.md): {components - set(LAYERS)}'


def test_no_module_imports_a_higher_layer():
    upward = []
    for path in python_files():
        here = component(module_name(path))
        for line, target in imported_modules(path):
            there = component(target)
            if LAYERS.get(there, 99) > LAYERS[here]:
                upward.append(f'{path.relative_to(PACKAGE.parent)}:{line} ({here}, layer {LAYERS[here]}) imports '
                              f'{target} ({there}, layer {LAYERS.get(there)})')
    assert not upward, 'imports against the layering:\n' + '\n'.join(upward)


def test_the_model_files_shipped_as_remote_code_import_no_llmfoundry():
    offenders = [f'{path.name}:{line} imports {target}' for path in sorted((PACKAGE / 'models' / 'mpt').glob('*.py'))
                 for line, target in imported_modules(path) if not target.startswith('llmfoundry.models.mpt')]
    assert not offenders, offenders


LOADED = '''
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(m for m in sys.modules if m.startswith('llmfoundry.'))))
'''


@pytest.mark.parametrize('name', [name for name, layer in LAYERS.items() if layer <= 3])
def test_importing_a_component_loads_nothing_above_it(name):
    """The same rule at run time, in a fresh interpreter: what importing a component really pulls in."""
    result = subprocess.run([sys.executable, '-c', LOADED, f'llmfoundry.{name}'], capture_output=True, text=True,
                            timeout=120, cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    above = [m for m in json.loads(result.stdout) if LAYERS.get(component(m), 99) > LAYERS[name]]
    assert not above, f'importing llmfoundry.{name} loads {above}'
