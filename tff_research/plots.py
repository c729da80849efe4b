"""Learning curves from `metrics.csv` files: `python -m tff_research.plots RUN_DIR... --out fig.png`.

Any run directory written by the training loop can be plotted, several overlaid
with labels (the directory name unless `--labels` is given).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

DEFAULT_METRICS = ("eval/accuracy", "train/loss")


def load_run(run_dir: str) -> list[dict[str, float]]:
  from tff_research.learning.training_loop import read_metrics_csv  # pylint: disable=g-import-not-at-top
  path = run_dir if run_dir.endswith(".csv") else os.path.join(run_dir, "metrics.csv")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no metrics.csv at {path}")
  return read_metrics_csv(path)


def plot_runs(run_dirs: Sequence[str], out_path: str, metrics: Sequence[str] = DEFAULT_METRICS,
              labels: Optional[Sequence[str]] = None, title: Optional[str] = None,
              baselines: Optional[dict[str, float]] = None) -> str:
  """One panel per metric, one line per run; `baselines` draws horizontal reference lines.

  The figure is a plain `matplotlib.figure.Figure` written to `out_path`: no
  pyplot, so the caller's backend (a notebook's inline one) is left alone.
  """
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  if labels is not None and len(labels) != len(run_dirs):
    raise ValueError(f"{len(labels)} labels given for {len(run_dirs)} runs")
  labels = list(labels) if labels else [os.path.basename(os.path.normpath(d)) for d in run_dirs]
  runs = [load_run(d) for d in run_dirs]
  fig = figure.Figure(figsize=(5.5 * len(metrics), 4))
  axes = fig.subplots(1, len(metrics), squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    for label, rows in zip(labels, runs):
      points = [(r["round"], r[metric]) for r in rows if metric in r]
      if points:
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, label=label)
    for name, value in (baselines or {}).items():
      if metric.endswith("accuracy"):
        ax.axhline(value, ls="--", color="gray", lw=1, label=name)
    ax.set_xlabel("round")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  fig.savefig(out_path, dpi=110)
  return out_path


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description="Plot metrics.csv of one or more runs.")
  parser.add_argument("run_dirs", nargs="+", help="run directories (or metrics.csv files)")
  parser.add_argument("--out", required=True, help="output PNG path")
  parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                      help="comma-separated metrics.csv columns, one panel each")
  parser.add_argument("--labels", default=None, help="comma-separated labels, one per run")
  parser.add_argument("--title", default=None)
  args = parser.parse_args(argv)
  try:
    path = plot_runs(args.run_dirs, args.out, [m for m in args.metrics.split(",") if m],
                     args.labels.split(",") if args.labels else None, args.title)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
