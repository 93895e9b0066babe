"""The foreground attention stays alive (issue 9): it neither dies nor saturates early.

Before docs/method.md §7's fixes, a fell below 0.05 within ~20 steps on every dataset (Adam
moves all D weights of the attention layer the same way when H >= 0) and stayed there for up
to 250 steps. This trains the configs/synthetic.py model (D 256) on the tiny preset through the
real loop, logging every step, and reads `diag_fg_mean` from metrics.jsonl.
"""
import json
import os

import jax
import pytest

import conftest
from aumn_jax import parallel
from aumn_jax import train_loop


@pytest.mark.parametrize('head', ['mil', 'aumn'])
def test_foreground_attention_stays_alive(head, tiny_data_dir, tmp_path):
  config = conftest.tiny_config(tiny_data_dir)
  config.model.head = head
  config.model.dim = 256          # the embedded default's width: the failure needs a real D
  config.model.num_units = 16
  config.optim.learning_rate = 3e-4
  config.data.max_snippets = 64
  config.num_train_steps = 60
  config.log_every_steps = 1
  config.eval_every_steps = 60
  config.checkpoint_every_steps = 60
  config.evaluation.num_plots = 0
  workdir = str(tmp_path / head)
  train_loop.train_and_evaluate(config, workdir, mesh=parallel.make_mesh(jax.devices()[:1]))
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    trace = {r['step']: r['diag_fg_mean'] for r in map(json.loads, f) if 'diag_fg_mean' in r}
  window = {s: a for s, a in trace.items() if 10 <= s <= 60}
  assert len(window) == 51
  dead = {s: round(a, 4) for s, a in window.items() if not 0.05 < a < 0.95}
  assert not dead, f'mean foreground attention left (0.05, 0.95) at steps {dead}'
