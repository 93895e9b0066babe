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
    'memory/bank|norm': 4.000000045618998,
    'memory/bank|proj': -0.3005892281922875,
    'memory/skeleton/fg_mean|norm': 1.211601327252011,
    'memory/skeleton/fg_mean|proj': -1.8436378090839072,
    'params/classifier/kernel|norm': 4.612700346696832,
    'params/classifier/kernel|proj': -7.2373967963926225,
    'params/classifier_bias|norm': 0.00274086587706391,
    'params/classifier_bias|proj': -0.0006557933648932546,
    'params/gate/bias|norm': 0.0006003965972922742,
    'params/gate/bias|proj': -0.0002074875729936973,
    'params/gate/kernel|norm': 1.0100213538381295,
    'params/gate/kernel|proj': 0.7370930768705727,
    'params/read_key/kernel|norm': 15.954276599377067,
    'params/read_key/kernel|proj': 16.319752829530323,
    'params/read_query/kernel|norm': 15.887029449864293,
    'params/read_query/kernel|proj': -20.99897170135759,
    'params/skeleton/embedding/conv/bias|norm': 0.00832878126185102,
    'params/skeleton/embedding/conv/bias|proj': 0.01592315001841779,
    'params/skeleton/embedding/conv/kernel|norm': 16.0151006874583,
    'params/skeleton/embedding/conv/kernel|proj': -23.308677365568713,
    'params/skeleton/fg_attention/bias|norm': 0.0005754741723649204,
    'params/skeleton/fg_attention/bias|proj': -0.00019887477691088242,
    'params/skeleton/fg_attention/kernel|norm': 0.9569099031034229,
    'params/skeleton/fg_attention/kernel|proj': 0.02340904906512714,
    'params/unit_bias|norm': 0.010925933858715405,
    'params/unit_bias|proj': 0.012653156079421603,
    'params/unit_kernel|norm': 0.16738980465368813,
    'params/unit_kernel|proj': 0.19911019414707248,
    'params/update_key/kernel|norm': 15.937040594725394,
    'params/update_key/kernel|proj': 3.6459969691718634,
    'params/update_query/kernel|norm': 16.015481664668066,
    'params/update_query/kernel|proj': -6.206948460443318,
    'step1/diag_fg_mean': 0.498450368642807,
    'step1/grad_norm': 28.759836196899414,
    'step1/loss': 7.346612930297852,
    'step1/loss_cls': 6.551602363586426,
    'step1/loss_div': 0.007219735532999039,
    'step1/loss_guide': 0.8284907341003418,
    'step1/loss_hom': 0.9258506298065186,
    'step1/loss_read': -0.17432022094726562,
    'step1/loss_sp': 0.498450368642807,
    'step2/diag_fg_mean': 0.5001402497291565,
    'step2/grad_norm': 21.294931411743164,
    'step2/loss': 6.54070520401001,
    'step2/loss_cls': 5.761648654937744,
    'step2/loss_div': 0.008172658272087574,
    'step2/loss_guide': 0.8068025708198547,
    'step2/loss_hom': 0.9280496835708618,
    'step2/loss_read': -0.1737666130065918,
    'step2/loss_sp': 0.5001402497291565,
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
