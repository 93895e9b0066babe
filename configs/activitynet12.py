"""AUMN on ActivityNet 1.2 I3D features (100 classes): the ActivityNet 1.3 config, 100 classes.

Run:    python -m data_prep.build --dataset activitynet12 --manual_dir RAW --data_dir DATA
        python train.py --config=configs/activitynet12.py --workdir=W --config.data.data_dir=DATA
Params: D=512, L=16, C=100: unit classifiers L*D*(C+1) = 0.83M, embedding 3*F*D = 3.1M.
Expect: not measured on the real features (they cannot be downloaded here); see
        configs/activitynet13.py for the synthetic ActivityNet-like regime's numbers.
"""
import ml_collections

from configs import activitynet13


def get_config() -> ml_collections.ConfigDict:
  c = activitynet13.get_config()
  c.data.dataset = 'activitynet12'
  return c
