"""The import structure the project promises (read from the source, nothing imported).

aumn_jax never imports data_prep (datasets are generated and built by the entry points),
evaluate.py never imports the training loop, aumn_jax/formats.py never imports the metric
(evaluation.py imports it) and neither of the two imports jax, and nothing edits sys.path: the
packages are imported as installed (`pip install -e .`).
"""
import ast
import os

import conftest

REPO = conftest.REPO


def _python_files(*dirs):
  for d in dirs:
    root = os.path.join(REPO, d)
    if os.path.isfile(root):
      yield root
      continue
    for name in sorted(os.listdir(root)):
      if name.endswith('.py'):
        yield os.path.join(root, name)


def _imports(path):
  """Every module name an import statement of `path` names (function-local ones too)."""
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read())
  names = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names += [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.append(node.module)
      names += [f'{node.module}.{a.name}' for a in node.names]
  return names


def test_the_library_never_imports_data_prep():
  offenders = [f'{os.path.basename(p)}: {m}' for p in _python_files('aumn_jax')
               for m in _imports(p) if m.split('.')[0] == 'data_prep']
  assert not offenders


def test_evaluate_py_imports_no_training_loop():
  offenders = [m for m in _imports(os.path.join(REPO, 'evaluate.py'))
               if m in ('aumn_jax.train_loop', 'aumn_jax.train_step')]
  assert not offenders


def test_the_formats_never_import_the_metric_and_neither_imports_jax():
  formats = _imports(os.path.join(REPO, 'aumn_jax', 'formats.py'))
  assert not [m for m in formats if m.startswith('aumn_jax.evaluation')]
  for name in ('formats.py', 'evaluation.py'):
    offenders = [m for m in _imports(os.path.join(REPO, 'aumn_jax', name))
                 if m.split('.')[0] in ('jax', 'jaxlib', 'flax', 'optax')]
    assert not offenders, name


def test_nothing_edits_sys_path():
  offenders = []
  for path in _python_files('aumn_jax', 'data_prep', 'configs', 'benchmarks', 'tests',
                            'train.py', 'evaluate.py'):
    with open(path, encoding='utf-8') as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):  # sys.path.<anything>(...) and sys.path[...] = ...
      target = node.func if isinstance(node, ast.Call) else (
          node.targets[0] if isinstance(node, ast.Assign) else None)
      target = getattr(target, 'value', None)
      if (isinstance(target, ast.Attribute) and target.attr == 'path'
          and isinstance(target.value, ast.Name) and target.value.id == 'sys'):
        offenders.append(f'{os.path.relpath(path, REPO)}:{node.lineno}')
  assert not offenders


def test_library_modules_stay_small_and_every_config_says_what_to_expect():
  """No module of aumn_jax/ over ~500 lines (issue 11); every config's docstring has an
  `Expect:` paragraph (measured time and mAP, or why there is none)."""
  for path in _python_files('aumn_jax'):
    with open(path, encoding='utf-8') as f:
      assert sum(1 for _ in f) <= 520, path
  for path in _python_files('configs'):
    if os.path.basename(path) == '__init__.py':
      continue
    with open(path, encoding='utf-8') as f:
      docstring = ast.get_docstring(ast.parse(f.read())) or ''
    assert '\nExpect: ' in docstring, path
