"""AUMN on ActivityNet 1.3 I3D features: train on `training`, evaluate on `validation`.

Run:    python -m data_prep.build --dataset activitynet13 --manual_dir RAW --data_dir DATA
        python train.py --config=configs/activitynet13.py --workdir=W --config.data.data_dir=DATA
Params: D=512, L=16, C=200: unit classifiers L*D*(C+1) = 1.65M (with D=2048, L=64 they would
        be 26M, for videos of ~100 snippets), embedding 3*F*D = 3.1M.
ActivityNet videos are short in snippets (median ~100), hence fewer snippets per clip, a
smaller top-k ratio and the ActivityNet tIoU thresholds 0.50:0.05:0.95.
Expect: not measured on the real features (they cannot be downloaded here). The synthetic
        ActivityNet-like regime (docs/robustness.md; configs/synthetic.py's model, 300 steps):
        avg mAP 0.1:0.7 mil 40.6 +- 1.6, AUMN 42.3 +- 4.7, about 7 min per run on one CPU core.
"""
import ml_collections
import numpy as np

from configs import thumos


def get_config() -> ml_collections.ConfigDict:
  c = thumos.get_config()
  c.data.dataset = 'activitynet13'
  c.data.max_snippets = 100
  c.data.sampling = 'uniform'
  c.data.eval_buckets = (128, 256, 512, 1024)
  c.data.eval_batch_size = 32
  c.model.dim = 512
  c.model.num_units = 16
  c.model.topk_ratio = 2
  c.batch_size = 64
  c.num_train_steps = 10000
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 1000
  # np.linspace values, exactly the ActivityNet code's (its '0.9' is 0.8999999999999999)
  c.evaluation.tiou_thresholds = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))
  c.localization.scale = 8
  return c
