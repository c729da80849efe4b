"""Paired comparison with plain FedAvg of the same seed (same clients, batches and initial model)."""
import csv
import statistics


def load(name):
  return list(csv.DictReader(open(f"results/quant_study/runs/{name}/metrics.csv")))


for corpus in ("shk", "man"):
  for setting in ("sec16_c100", "sec16_c16", "sec21_c100", "sec32_c100", "secdefault"):
    for seed in range(3):
      try:
        sec, plain = load(f"{corpus}_{setting}_s{seed}"), load(f"{corpus}_plain_s{seed}")
      except FileNotFoundError:
        continue
      dl = [abs(float(a["train/loss"]) - float(b["train/loss"])) for a, b in zip(sec, plain)]
      e = {int(r["round"]): r for r in sec if r.get("eval/accuracy")}
      p = {int(r["round"]): r for r in plain if r.get("eval/accuracy")}
      d40 = float(e[40]["eval/accuracy"]) - float(p[40]["eval/accuracy"])
      d80 = float(e[80]["eval/accuracy"]) - float(p[80]["eval/accuracy"])
      dloss = float(e[80]["eval/loss"]) - float(p[80]["eval/loss"])
      print(f"{corpus} {setting:11s} s{seed}: |train loss diff| mean {statistics.mean(dl):.4f} max {max(dl):.4f} "
            f"first20 {statistics.mean(dl[:20]):.4f}; eval acc diff r40 {d40:+.4f} r80 {d80:+.4f}; "
            f"eval loss diff r80 {dloss:+.4f}")
  for r in (40, 80):
    accs = [float(next(x for x in load(f"{corpus}_plain_s{s}") if x["round"] == str(r))["eval/accuracy"])
            for s in range(3)]
    print(f"{corpus} plain r{r}: {accs} mean {statistics.mean(accs):.4f} sd {statistics.stdev(accs):.4f}")
