"""One row per finished run in runs/: final accuracy and loss, the quantization error per round."""
import csv
import glob
import os
import statistics

rows = []
for path in sorted(glob.glob(os.path.join("results", "quant_study", "runs", "*", "metrics.csv"))):
  name = os.path.basename(os.path.dirname(path))
  data = list(csv.DictReader(open(path)))
  if not data or int(data[-1]["round"]) < 80:
    continue
  last = data[-1]
  mid = next(r for r in data if r["round"] == "40")
  qe = [float(r["secure/quantization_error"]) for r in data if r.get("secure/quantization_error")]
  ce = [float(r["secure/clipping_error"]) for r in data if r.get("secure/clipping_error")]
  clipped = sum(float(r.get("secure/clipped") or 0) for r in data)
  print(f"{name:28s} acc40 {float(mid['eval/accuracy']):.4f} acc80 {float(last['eval/accuracy']):.4f} "
        f"loss80 {float(last['eval/loss']):.4f} bits {last.get('secure/bits') or '-':>4s} "
        + (f"qerr median {statistics.median(qe):.4f} max {max(qe):.4f} clip-err max {max(ce):.4f} clipped {clipped:.0f}"
           if qe else ""))
