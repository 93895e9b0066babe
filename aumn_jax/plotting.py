"""Per-video figures: what a researcher looks at first (host side, matplotlib Agg).

One PNG per video: the suppressed-branch CAS of the video's ground-truth and predicted classes
over time, the foreground attention, the ground-truth segments and the kept proposals, and —
for the AUMN head — the read attention A (which action units fire where). Time is in seconds,
using the video's own fps and snippet stride. No model code, no files other than the PNG.
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
