"""Golden numbers: one train step of the default model (configs/synthetic.py), pinned.

Every other test checks a property (padding, devices, resume, parity); this one notices any
change to what the default computes: a loss reduction, an init, a layer order, a dependency
upgrade that moves numerics. Updating the numbers is legitimate only when the change is meant
to alter the default computation (then say so in the commit, with its measured effect on the
battery, docs/method.md) or when a dependency upgrade moves them by float rounding alone
(relative change ~1e-6, every entry alike); anything else is a regression to find. On a
failure the message holds the new values, ready to paste.
"""
import jax
import numpy as np

from aumn_jax import parallel
from aumn_jax import train_step
from configs import synthetic

NUM_CLASSES = 20  # the synthetic THUMOS-like preset's

# Measured on the pinned stack (requirements.txt, CPU); the newest stack
# (requirements-newest.txt) matches to GOLDEN_RTOL.
GOLDEN = {
    'memory/bank|norm': 3.99999996059797,
    'memory/bank|proj': -0.29874467613831246,
    'params/classifier/kernel|norm': 4.612754109317528,
    'params/classifier/kernel|proj': -7.238163278680531,
    'params/classifier_bias|norm': 0.0027403090431074697,
    'params/classifier_bias|proj': -0.0006538311688002107,
    'params/gate/bias|norm': 0.0006004010210745037,
    'params/gate/bias|proj': -0.0002074891017829049,
    'params/gate/kernel|norm': 1.0098463215885571,
    'params/gate/kernel|proj': 0.7382579949641396,
    'params/read_key/kernel|norm': 15.954327642469343,
    'params/read_key/kernel|proj': 16.347367892253267,
    'params/read_query/kernel|norm': 15.887078929954534,
    'params/read_query/kernel|proj': -21.006234594787202,
    'params/skeleton/embedding/conv/bias|norm': 0.008429905942496877,
    'params/skeleton/embedding/conv/bias|proj': 0.015450740328211275,
    'params/skeleton/embedding/conv/kernel|norm': 16.014932446835992,
    'params/skeleton/embedding/conv/kernel|proj': -23.161082708326067,
    'params/skeleton/fg_attention/bias|norm': 0.0004885084345005453,
    'params/skeleton/fg_attention/bias|proj': -0.00016882079265370436,
    'params/skeleton/fg_attention/kernel|norm': 0.9567270136506185,
    'params/skeleton/fg_attention/kernel|proj': 0.02854460716666596,
    'params/unit_bias|norm': 0.010921602958528733,
    'params/unit_bias|proj': 0.012714744433000306,
    'params/unit_kernel|norm': 0.16747700013759367,
    'params/unit_kernel|proj': 0.19059097901263933,
    'params/update_key/kernel|norm': 15.936264936328557,
    'params/update_key/kernel|proj': 3.661662208447794,
    'params/update_query/kernel|norm': 16.014891066672018,
    'params/update_query/kernel|proj': -6.218947662494562,
    'step1/diag_fg_mean': 0.535652220249176,
    'step1/grad_norm': 29.068359375,
    'step1/loss': 7.362545490264893,
    'step1/loss_cls': 6.573307991027832,
    'step1/loss_div': 0.007080372888594866,
    'step1/loss_guide': 0.8167818188667297,
    'step1/loss_hom': 0.9261630177497864,
    'step1/loss_read': -0.1745002269744873,
    'step1/loss_sp': 0.535652220249176,
    'step2/diag_fg_mean': 0.5387126207351685,
    'step2/grad_norm': 22.154644012451172,
    'step2/loss': 6.54729700088501,
    'step2/loss_cls': 5.7702531814575195,
    'step2/loss_div': 0.008092205971479416,
    'step2/loss_guide': 0.7996230721473694,
    'step2/loss_hom': 0.9282464981079102,
    'step2/loss_read': -0.17442798614501953,
    'step2/loss_sp': 0.5387126207351685,
}
GOLDEN_RTOL = 1e-5


def _batch():
  rng = np.random.default_rng(0)
  b, t = 4, synthetic.get_config().data.max_snippets
  lengths = np.array([t, t - 40, t // 2, 17])
  mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.float32)
  features = rng.standard_normal((b, t, 2048)).astype(np.float32) * mask[..., None]
  labels = np.zeros((b, NUM_CLASSES), np.float32)
  labels[[0, 0, 1, 2, 3], [3, 7, 0, 19, 5]] = 1.0
  return {'features': features, 'mask': mask, 'labels': labels}


def _fingerprints(tree, prefix):
  """Per leaf its norm and a projection on a fixed random direction (signs and order count)."""
  out = {}
  for path, v in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]:
    name = prefix + '/'.join(str(getattr(k, 'key', k)) for k in path)
    v = np.asarray(v, np.float64).ravel()
    out[name + '|norm'] = float(np.linalg.norm(v))
    out[name + '|proj'] = float(v @ np.random.default_rng(1).standard_normal(v.size))
  return out


def golden_values():
  config = synthetic.get_config()
  mesh = parallel.make_mesh(jax.devices()[:1])
  state = train_step.init_state(config, NUM_CLASSES, mesh)
  train_fn, _ = train_step.jit_steps(config, mesh)
  # One seed: the step is vmapped over a seed axis of 1 (the golden numbers predate that axis,
  # so they also pin the vmapped step to the plain one).
  batch = parallel.to_global({k: v[None] for k, v in _batch().items()},
                             parallel.seed_batch_sharded(mesh))
  rngs = train_step.dropout_rngs(config, mesh)
  values = {}
  for step in (1, 2):
    state, metrics = train_fn(state, batch, rngs)
    for key in ('loss', 'loss_cls', 'loss_div', 'loss_hom', 'loss_sp', 'loss_read',
                'loss_guide', 'grad_norm', 'diag_fg_mean'):
      values[f'step{step}/{key}'] = float(metrics[key][0])
  state = train_step.replica(state, 0)
  values.update(_fingerprints(state.params, 'params/'))
  values.update(_fingerprints(state.memory, 'memory/'))
  return values


def test_one_step_of_the_default_config_matches_its_golden_numbers():
  values = golden_values()
  paste = ('\nnew GOLDEN = {\n' + ''.join(f'    {k!r}: {v!r},\n' for k, v in sorted(values.items()))
           + '}')
  assert sorted(values) == sorted(GOLDEN), 'other entries' + paste
  bad = {k: (values[k], GOLDEN[k]) for k in GOLDEN
         if not np.isclose(values[k], GOLDEN[k], rtol=GOLDEN_RTOL, atol=1e-7)}
  assert not bad, f'changed (new, golden): {bad!r}' + paste
