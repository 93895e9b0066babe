"""Shared test setup: 8 fake CPU devices, set before anything imports jax."""
import os
import sys

os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

SHARED_DATA = os.path.join(os.path.dirname(REPO), 'shared', 'data')
