"""Figures: what a researcher looks at first (host side, matplotlib Agg).

One PNG per video: the suppressed-branch CAS of the video's ground-truth and predicted classes
over time, the foreground attention, the ground-truth segments and the kept proposals, and —
for the AUMN head — the read attention A (which action units fire where). Time is in seconds,
using the video's own fps and snippet stride. For the AUMN head also one class x unit usage
matrix of the whole split (which units fire on which classes). No model code, no files other
than the PNGs.
"""
import os
from typing import Any, Mapping, Optional, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position


def plot_video(path: str, video_id: str, outputs: Mapping[str, np.ndarray],
               annotations: Sequence[Mapping[str, Any]],
               proposals: Sequence[Mapping[str, Any]], *, class_names: Sequence[str],
               fps: float, snippet_stride: int, duration: float,
               max_proposals: int = 10) -> None:
  """Writes `path` (PNG) for one video.

  Args:
    path: output file; its directory is created.
    video_id: title.
    outputs: eval_step outputs of this video cut to its length: 'cas_probs' [T, C+1],
      'fg' [T], optionally 'read_attn' [T, L].
    annotations: ground truth [{'segment': [s, e], 'label': name}].
    proposals: localization output for this video (best first).
    class_names: the C action classes.
    fps, snippet_stride, duration: the video's timing.
    max_proposals: how many of the best proposals to draw.
  """
  cas = np.asarray(outputs['cas_probs'])
  t = (np.arange(cas.shape[0]) + 0.5) * snippet_stride / fps  # snippet centres, seconds
  gt_labels = sorted({a['label'] for a in annotations})
  top = [p['label'] for p in proposals[:max_proposals]]
  shown = list(dict.fromkeys(gt_labels + top))[:6]
  colors = {name: plt.cm.tab10(i % 10) for i, name in enumerate(shown)}
  has_attn = 'read_attn' in outputs
  rows = 3 if has_attn else 2
  fig, axes = plt.subplots(rows, 1, figsize=(12, 2.4 * rows), sharex=True,
                           gridspec_kw={'height_ratios': [3, 1.2] + ([2] if has_attn else [])})
  ax = axes[0]
  for name in shown:
    ax.plot(t, cas[:, list(class_names).index(name)], color=colors[name], lw=1.2,
            label=f'CAS {name}')
  ax.plot(t, np.asarray(outputs['fg']), color='0.4', lw=0.8, ls='--', label='foreground a')
  ax.set_ylim(-0.02, 1.02)
  ax.set_ylabel('probability')
  ax.set_title(video_id)
  ax.legend(loc='upper right', fontsize=7, ncol=2)

  ax = axes[1]
  for a in annotations:
    s, e = a['segment']
    ax.axvspan(s, e, ymin=0.55, ymax=0.95, color=colors.get(a['label'], 'k'), alpha=0.6)
  for p in proposals[:max_proposals]:
    s, e = p['segment']
    ax.axvspan(s, e, ymin=0.05, ymax=0.45, color=colors.get(p['label'], 'k'),
               alpha=float(np.clip(0.25 + 0.5 * p['score'], 0.15, 0.9)))
  ax.set_yticks([0.25, 0.75], [f'top-{max_proposals} proposals', 'ground truth'])
  ax.set_ylim(0, 1)

  if has_attn:
    attn = np.asarray(outputs['read_attn'])
    axes[2].imshow(attn.T, aspect='auto', origin='lower', interpolation='nearest',
                   extent=(0, cas.shape[0] * snippet_stride / fps, -0.5, attn.shape[1] - 0.5),
                   cmap='magma')
    axes[2].set_ylabel('action unit')
  axes[-1].set_xlabel('time (s)')
  axes[-1].set_xlim(0, max(duration, t[-1] if len(t) else 0.0))
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=80)
  plt.close(fig)


def class_unit_usage(outputs: Mapping[str, Mapping[str, np.ndarray]], split
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Mean read attention over the ground-truth snippets of each class, and of the background.

  Returns (usage [C + 1, L], counts [C + 1]): row c < C averages A_t over every snippet of the
  split inside an instance of class c (split.snippet_classes), row C over the snippets inside
  none; each row with a snippet sums to 1 (A_t does). counts: snippets per row. A unit that
  fires on every class alike is a column of equal values; a class-specific unit, one bright
  cell. Needs 'read_attn' [T, L] in every video's outputs (the AUMN head).
  """
  num_units = next(iter(outputs.values()))['read_attn'].shape[-1]
  sums = np.zeros((split.num_classes + 1, num_units))
  counts = np.zeros(split.num_classes + 1)
  for i, video_id in enumerate(split.video_ids):
    attn = np.asarray(outputs[video_id]['read_attn'], np.float64)
    classes = split.snippet_classes(i, attn.shape[0])
    rows = np.concatenate([classes, ~classes.any(axis=-1, keepdims=True)], axis=-1)
    sums += rows.T.astype(np.float64) @ attn
    counts += rows.sum(axis=0)
  return sums / np.maximum(counts, 1)[:, None], counts


def plot_class_unit_usage(path: str, usage: np.ndarray, counts: np.ndarray,
                          class_names: Sequence[str]) -> None:
  """Writes `path` (PNG): the class_unit_usage matrix, one row per class + background."""
  names = [f'{n} ({int(k)})' for n, k in zip(list(class_names) + ['background'], counts)]
  fig, ax = plt.subplots(figsize=(2 + 0.3 * usage.shape[1], 1 + 0.28 * usage.shape[0]))
  im = ax.imshow(usage, aspect='auto', interpolation='nearest', cmap='magma', vmin=0.0)
  ax.set_yticks(range(len(names)), names, fontsize=7)
  ax.set_xlabel('action unit')
  ax.set_title('mean read attention over ground-truth snippets (snippets per row)', fontsize=8)
  fig.colorbar(im, ax=ax, fraction=0.03)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=80)
  plt.close(fig)


def plot_videos(directory: str, outputs: Mapping[str, Mapping[str, np.ndarray]], split,
                results: Mapping[str, Sequence[Mapping[str, Any]]], num_videos: int,
                max_proposals: Optional[int] = 10) -> list[str]:
  """PNGs for the first `num_videos` videos of `split` (a data.VideoSplit); returns the paths."""
  paths = []
  for i, video_id in enumerate(split.video_ids[:num_videos]):
    meta = split.meta(i)
    path = os.path.join(directory, f'{video_id}.png')
    plot_video(path, video_id, outputs[video_id], split.annotations(i),
               results.get(video_id, []), class_names=split.class_names, fps=meta['fps'],
               snippet_stride=meta['snippet_stride'], duration=meta['duration'],
               max_proposals=max_proposals)
    paths.append(path)
  return paths
