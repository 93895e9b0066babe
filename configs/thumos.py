"""AUMN on THUMOS14 I3D features (SPEC.md §4): the base config every other config overrides.

Run:    python train.py --config=configs/thumos.py --workdir=/tmp/aumn/thumos
Data:   python -m data_prep.build --dataset thumos14 --manual_dir RAW --data_dir DATA
        then --config.data.data_dir=DATA
Params: D=2048, L=64, C=20: unit classifiers L*D*(C+1) = 2.75M, embedding 3*F*D = 12.6M.
Expect: a train step of 8.9 ms on one H200 (batch 16 x 750 snippets, BENCHMARKS.md), so the
        5000 steps take about a minute of GPU time plus evaluations; 1.0-1.9 s per step at
        batch 2 on 2 CPU cores. mAP on the real THUMOS14 features: not measured (they cannot
        be downloaded here); the paper reports avg mAP 0.1:0.5 of 52.1. On the few-video
        regime built on the real THUMOS14 annotations (docs/robustness.md, 300 steps):
        mil 51.1 +- 0.1, AUMN 51.8 +- 4.3 avg mAP 0.1:0.7, about 15 / 40 min per run on one
        CPU core.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Independent runs trained as one program: seeds seed .. seed + num_seeds - 1, each the run of
  # that seed alone (its init, dropout and data order); results.json adds the mean ± std.
  c.num_seeds = 1
  c.batch_size = 16               # global; divisible by jax.process_count() * local devices
  c.num_train_steps = 5000
  c.log_every_steps = 50
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  c.profile_steps = (0, 0)        # [start, end): a jax.profiler trace into W/profile (0, 0: off)
  # The convolution and the matmuls: 'float32' | 'bfloat16' (parameters, optimizer state, the
  # memory bank, softmaxes, top-k and losses are float32 either way; models.COMPUTE_DTYPES).
  c.compute_dtype = 'float32'

  c.data = ml_collections.ConfigDict(dict(
      dataset='thumos14',         # thumos14 | activitynet12 | activitynet13 | synthetic
      data_dir='~/tensorflow_datasets',
      train_split='train',
      eval_split='test',
      feature_dim=2048,
      max_snippets=750,           # training clips: longer videos sampled, shorter padded + masked
      sampling='random_crop',     # or 'uniform' (sorted uniform random sampling of max_snippets)
      eval_buckets=(256, 512, 1024, 2048, 4096),  # eval lengths padded up to one of these
      eval_batch_size=8,          # global, per eval step
      synthetic_preset='thumos',  # dataset='synthetic' only: generated + built on first use
      synthetic_seed=0,           #   into data_dir when absent (data_prep.synthetic presets)
  ))

  c.model = ml_collections.ConfigDict(dict(
      head='aumn',                # 'mil': BaS-Net baseline (one linear classifier, no memory)
      dim=2048,                   # D
      num_units=64,               # L
      dropout=0.7,
      # Read-attention temperature of the cosine logits. SPEC §4 lists tau = 1, §2 sets 0.1: with
      # tau = 1 the attention stayed exactly uniform in a prototype (§2, §9), so 0.1.
      tau=0.1,
      tau_u=0.01,                 # update attention temperature (0.1 leaves R uniform)
      topk_ratio=8,               # r: k = max(1, floor(T_valid / r))
      # Memory remedies (SPEC §9; evidence in docs/method.md). tau_u=0.01 + center_features is
      # the measured-healthy memory; SPEC's literal v2 is tau_u=0.1, center_features=False.
      center_features=True,       # subtract each video's masked mean of H before Wk, U and Qr
      fg_bias_init=0.0,           # initial bias of the foreground-attention layer (a = sigmoid)
      # Skeleton (issue 9; evidence in docs/method.md §7, chosen on the validation battery,
      # data seed 1). SPEC §2 as written is input_norm='none'.
      input_norm='layernorm',     # X before the conv: 'none' | 'layernorm' (per snippet) | 'center'
      fg_input='dropped',         # a reads: H after dropout | 'embedding' (before) | 'features'
      # a's layer input: 'batch' (H - the batch's mean; a running mean at eval; removes the dip
      # of a, docs/method.md §9) | 'none' (SPEC) | 'center' (H - mean_t H) | 'layernorm'
      fg_norm='batch',
      classifier_bias=True,       # bias b / b_l of the class classifiers (BaS-Net has none)
      # AUMN's unit classifiers (docs/method.md §8; SPEC §2.5 as written is 'lecun', False):
      # BaS-Net's classifier beside zero-initialised units, so AUMN starts as the baseline and
      # the memory adds per-unit corrections. Chosen on the VALIDATION battery (data seed 1):
      # AUMN avg mAP 0.1:0.7, run seed 0: fewvideo 42.2 -> 51.0, fewvideo_partial 7.2 -> 21.9,
      # partial 31.6 -> 37.5, thumos 68.1 -> 69.9, activitynet 30.0 -> 37.2 (the units alone
      # learned the classes slowly: top-1 60 -> 84 % on activitynet).
      unit_init='zeros',          # W_l start: 'zeros' (all alike) | 'lecun' (each its own Dense)
      shared_classifier=True,     # S_t = Z_t W_0 + b_0 + sum_l A_tl (Z_t W_l + b_l); False: SPEC
      # True: + sum_l A_tl (c_b V_l), V_l zero-initialised, c_b the video's mass-weighted adapted
      # memory at rms 1 (memory.unit_context_logits; beyond SPEC; a one-seed validation screen
      # showed no gain beyond noise, docs/method.md §13).
      unit_context=False,
      # The suppressed branch: 'features' a (H W) + b (SPEC) | 'logits' a (s - min_t s) + min_t s
      # (docs/method.md §9).
      suppress='features',
  ))

  c.memory = ml_collections.ConfigDict(dict(
      momentum=0.01,              # eta of the stored-bank update
  ))

  c.loss = ml_collections.ConfigDict(dict(
      lambda_div=1.0,
      lambda_hom=0.1,
      lambda_sp=0.1,              # foreground L1, mean_t a (SPEC §3's L_sp, first term)
      lambda_read=0.1,            # read-attention sparsity (L_sp's second term; AUMN only)
      # Guide loss: a follows 1 - p_bg of the base branch (keeps a alive; docs/method.md §7,
      # chosen on the validation battery, data seed 1: BCE over the video's classes kept mean
      # a in [0.22, 0.55] on every run of both heads, where the L1 over all classes let it
      # saturate or die).
      lambda_guide=0.8,
      guide_form='bce',           # BCE(a, stop_grad(1 - p_bg)) | 'l1': |1 - a - p_bg| (HAM-Net)
      guide_classes='video',      # p_bg over the video's classes + bg | 'all' C + 1 columns
      guide_center=False,         # True: p_bg from the CAS centred over the video's snippets
      guide_center_steps=0,       # > 0: centred for the first steps only (guide_center: always)
      guide_steps=0,              # > 0: lambda_guide decays linearly to 0 over these steps
  ))

  c.optim = ml_collections.ConfigDict(dict(
      learning_rate=1e-4,
      weight_decay=5e-4,          # L2 added to the loss gradient (Adam + L2, SPEC §4)
      cosine_steps=0,             # > 0: lr decays along a cosine to 0 over these steps (SPEC: 0)
  ))

  c.localization = ml_collections.ConfigDict(dict(
      # What proposals are cut from (localization.snippet_scores): sqrt(p'(c | action) * a), not
      # SPEC's p'_c alone ('class') nor a alone ('actionness'). Chosen on the VALIDATION battery
      # (data seed 1, run seed 0, 5 regimes x 2 heads, 300 steps; never a reported split) by
      # the worst case against 'class': it beat 'class' on all 10 runs (+0.3 to +9.1 avg mAP
      # 0.1:0.7, mean +5.3; run seed 1 afterwards: 10 of 10 again); 'actionness' gained more on
      # average (+7.8) but lost on 2 of 10 (-2.5, -0.6: where a is weak or videos hold several
      # classes). docs/method.md §7.
      score='class_x_actionness',
      class_threshold=0.2,        # video classes: p'_c >= this, else top-1
      scale=24,                   # CAS upsampling factor
      thresholds=tuple(round(0.1 + 0.05 * i, 2) for i in range(17)),  # 0.10 .. 0.90
      outer_ratio=0.25,           # outer-inner contrast margin, fraction of length each side
      gamma=0.2,                  # weight of the video score in the proposal score
      # soft_nms, not nms (issue 5, tuned on the synthetic VALIDATION dataset, data seed 1,
      # never on a reported test split): re-localizing the same BaS-Net checkpoint (300 steps)
      # with soft-NMS raised avg mAP 0.1:0.7 from 48.9 to 59.6 (every tIoU up, 0.7: 16.0 -> 18.4);
      # nms_iou 0.4 gave 55.8, thresholds 0.1:0.5 52.2, gamma 0 50.1. Evidence: docs/method.md §6.
      nms='soft_nms',             # or 'nms'
      nms_iou=0.6,
      soft_nms_sigma=0.5,
      max_proposals=200,          # per video, after NMS
  ))

  c.evaluation = ml_collections.ConfigDict(dict(
      tiou_thresholds=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
      num_plots=4,
  ))
  return c
