"""ActivityNet 1.3 annotations for the UM layout, rebuilt from BSN's files.

  python -m data_prep.anet13_gt --bsn_dir BSN --out_dir RAW [--splits_dir ACMNET_SPLITS]

The official activity_net.v1-3.min.json (and ACM-Net's gt.json made from it) is not obtainable
here; BSN's anet_anno_action.json + video_info_new.csv carry the same training and validation
annotations (../shared/data/README.md). Writes RAW/gt.json, ActivityNet style: {"version",
"taxonomy", "database": {"v_<youtube id>": {"subset", "duration", "annotations": [{"segment":
[s, e], "label"}]}}}, all 19228 videos (testing ones without annotations). With --splits_dir,
also RAW/split_{train,test}.txt: ACM-Net's lists of the videos it has features for, minus the
ids BSN does not annotate (13 train, 8 test), reported on stdout.

Holds only the conversion. Deliberately doesn't write classlist.txt: the UM reader then sorts
the labels, which is W-TALC's ActivityNet1.3 classlist.npy order (BSN's action_name.csv is in
another order), so both layouts give the same class indices.
"""
import argparse
import csv
import json
import os
import sys

from aumn_jax import files
from aumn_jax.data import DataError
from data_prep import layouts


def convert(bsn_dir: str, out_dir: str, splits_dir: str | None = None) -> dict[str, int]:
  """Writes gt.json (and filtered split files) into out_dir; returns dropped ids per split."""
  anno_path = os.path.join(bsn_dir, 'anet_anno_action.json')
  info_path = os.path.join(bsn_dir, 'video_info_new.csv')
  try:
    with open(anno_path, 'rb') as f:
      anno = json.loads(f.read().decode('utf-8'))
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise DataError(anno_path, f'unreadable or malformed JSON: {e}') from None
  try:
    with open(info_path, encoding='utf-8', newline='') as f:
      subsets = {row['video']: row['subset'] for row in csv.DictReader(f)}
  except (OSError, KeyError, UnicodeDecodeError, csv.Error) as e:
    raise DataError(info_path, f'unreadable video list ({type(e).__name__}: {e})') from None

  database = {}
  for vid, entry in anno.items():
    if vid not in subsets:
      raise DataError(info_path, f'no row for annotated video {vid!r}')
    try:
      database[vid] = {
          'subset': subsets[vid], 'duration': float(entry['duration_second']),
          'annotations': [{'segment': [float(a['segment'][0]), float(a['segment'][1])],
                           'label': str(a['label'])} for a in entry['annotations']]}
    except (KeyError, TypeError, ValueError, IndexError):
      raise DataError(anno_path, f'video {vid!r}: unexpected entry format') from None

  os.makedirs(out_dir, exist_ok=True)
  dropped = {}
  if splits_dir:
    for split, name in layouts.UM_SPLIT_FILES.items():
      ids = layouts.read_lines(os.path.join(splits_dir, name))
      kept = [v for v in ids if v in database]
      dropped[split] = len(ids) - len(kept)
      files.write_atomic(os.path.join(out_dir, name), ''.join(v + '\n' for v in kept))
  files.write_atomic(os.path.join(out_dir, layouts.UM_GT), json.dumps(
      {'version': 'ActivityNet 1.3 (from BSN anet_anno_action.json)', 'taxonomy': [],
       'database': database}))
  return dropped


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m data_prep.anet13_gt',
                                   description=__doc__.split('\n\n')[0])
  parser.add_argument('--bsn_dir', required=True,
                      help='holds anet_anno_action.json and video_info_new.csv')
  parser.add_argument('--out_dir', required=True, help='the UM raw dir to write gt.json into')
  parser.add_argument('--splits_dir', default=None,
                      help="ACM-Net's split_train.txt / split_test.txt, filtered into out_dir")
  args = parser.parse_args(argv)
  try:
    dropped = convert(args.bsn_dir, args.out_dir, args.splits_dir)
  except DataError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  except OSError as e:
    print(f'error: {e.filename or args.out_dir}: {e.strerror or e}', file=sys.stderr)
    return 1
  for split, n in dropped.items():
    print(f'{layouts.UM_SPLIT_FILES[split]}: dropped {n} ids without BSN annotations')
  print(os.path.join(args.out_dir, layouts.UM_GT))
  return 0


if __name__ == '__main__':
  sys.exit(main())
