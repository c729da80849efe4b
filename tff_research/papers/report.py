"""Markdown tables of the paper-reproduction summaries, and publishing them for git.

`results/` is not committed (runs are large); `publish` copies what the
README, REPRODUCTION.md and `notebooks/reproduce_papers.ipynb` need (each
experiment's summary.json, results.csv and plots) into `reproduction/`.

  python -m tff_research.papers.report results/papers/paper            # print tables
  python -m tff_research.papers.report results/papers/paper --publish reproduction
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import textwrap
from typing import Any, Optional, Sequence

PUBLISHED_DIR = "reproduction"
ORDER = ("fedavg_vs_fedsgd_char", "adaptive_optimizers_char", "fedavg_vs_fedsgd", "adaptive_optimizers",
         "federated_vs_centralized", "secure_cost", "privacy_utility")
TITLES = {"fedavg_vs_fedsgd_char": "FedAvg vs FedSGD, Shakespeare characters (McMahan et al. 2017)",
          "adaptive_optimizers_char": "Adaptive server optimizers, Shakespeare characters (Reddi et al. 2021)",
          "fedavg_vs_fedsgd": "FedAvg vs FedSGD (Shakespeare NWP)",
          "adaptive_optimizers": "Adaptive server optimizers, best lr each",
          "federated_vs_centralized": "CIFG: federated vs centralized, equal example passes",
          "secure_cost": "Plain vs secure aggregation",
          "privacy_utility": "Accuracy against user-level epsilon (McMahan et al. 2018's DP-FedAvg and successors)"}


def load_summaries(directory: str) -> dict[str, dict[str, Any]]:
  """{experiment name: summary} for every experiment with a summary.json under `directory`."""
  summaries = {}
  for name in ORDER:
    path = os.path.join(directory, name, "summary.json")
    if os.path.isfile(path):
      with open(path, encoding="utf-8") as f:
        summaries[name] = json.load(f)
  return summaries


def _fmt(value: Any, digits: int = 4) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    if math.isnan(value):
      return "-"
    return f"{value:.{digits}f}"
  return str(value)


def _pct(value: Optional[float]) -> str:
  return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f} %"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def fedavg_vs_fedsgd_markdown(summary: dict[str, Any]) -> str:
  a = summary["analysis"]
  rows = [[t["label"], t["algorithm"], t["epochs"], t["batch_size"], t["rounds"], _pct(t["best_accuracy"]),
           t["rounds_to_target"] if t["rounds_to_target"] is not None else "not reached",
           (">= " if t.get("speedup_is_lower_bound") else "") + _fmt(t["speedup_vs_fedsgd"], 1)
           + ("x" if t["speedup_vs_fedsgd"] else ""), t["train_seconds"]]
          for t in a["table"]]
  paper = a["paper"]
  paper_rows = [[f"McMahan et al. 2017, {k.replace('_', ' ')}", _pct(v["target_accuracy"]), v["fedsgd_rounds"],
                 v["fedavg_rounds"], f"{v['speedup']:.1f}x"] for k, v in paper.items()]
  return "\n\n".join([
      ("Target accuracy (the lowest best accuracy of the FedAvg runs that learned; FedSGD never rose "
       "above 0.1 %, so speed-ups are lower bounds over its whole budget)" if a.get("target_is_fedavg_only")
       else "Target accuracy (the best accuracy of the best FedSGD run)")
      + f": **{_pct(a['target_accuracy'])}**; FedSGD run compared: {a.get('fedsgd_compared')}; "
      f"unigram baseline {_pct(a['unigram_accuracy'])}.",
      _table(["run", "algorithm", "E", "B", "rounds", "best accuracy", "rounds to target",
              "speed-up vs FedSGD", "train s"], rows),
      "Paper:",
      _table(["setting", "target", "FedSGD rounds", "FedAvg rounds", "speed-up"], paper_rows)])


def adaptive_optimizers_markdown(summary: dict[str, Any]) -> str:
  a = summary["analysis"]
  rows = [[t["algorithm"], f"{t['server_lr']:.3g}", t["lr_vs_paper"], t["seeds"],
           f"{_pct(t['accuracy_mean'])} ± {_pct(t['accuracy_std'])}", _pct(t["recall_at_3_mean"])]
          for t in a["table"]]
  grid = [[g["algorithm"], f"{g['server_lr']:.3g}", g["lr_vs_paper"], g["seed"], _pct(g["final_accuracy"])]
          for g in a["grid"]]
  ahead = ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in a["adaptive_ahead_of_fedavg"].items())
  return "\n\n".join([
      _table(["algorithm", "server lr", "lr vs paper", "seeds", "final accuracy (mean ± std)",
              "recall@3 (mean)"], rows),
      f"Ranking: {' > '.join(a['ranking'])}. Adaptive method ahead of FedAvg: {ahead}. "
      f"Unigram baseline {_pct(a['unigram_accuracy'])}.",
      "<details><summary>learning-rate grid (seed 0)</summary>\n\n"
      + _table(["algorithm", "server lr", "lr vs paper", "seed", "final accuracy"], grid) + "\n\n</details>"])


def federated_vs_centralized_markdown(summary: dict[str, Any]) -> str:
  a = summary["analysis"]
  rows = [[t["training"], _pct(t["recall_at_1"]), _pct(t["recall_at_3"]), _fmt(t["perplexity"], 1),
           t["train_examples"], t["train_seconds"]] for t in a["table"]]
  rows.append(["paper: federated CIFG (Hard et al. 2018)", _pct(a["paper"]["federated_recall_at_1"]), "-", "-",
               "-", "-"])
  rows.append(["paper: server-trained CIFG", _pct(a["paper"]["centralized_recall_at_1"]), "-", "-", "-", "-"])
  gap = a["recall_at_1_gap_federated_minus_centralized"]
  return "\n\n".join([
      _table(["training", "recall@1", "recall@3", "perplexity", "example passes", "train s"], rows),
      f"Federated minus centralized recall@1: {100 * gap:+.2f} points (paper: "
      f"{100 * a['paper_gap']:+.2f}). Unigram baseline {_pct(a['unigram_accuracy'])}."])


def secure_cost_markdown(summary: dict[str, Any]) -> str:
  a = summary["analysis"]
  rows = [[t["aggregator"], t["bits"], _pct(t["accuracy"]), f"{t['accuracy_minus_plain_points']:+.2f}",
           _pct(t["recall_at_3"]), _fmt(t["eval_loss"]), t["train_seconds"],
           _fmt(t["time_vs_plain"], 2) + "x", t["values_clipped"],
           "-" if not t["upload_bytes_per_client"] else f"{t['upload_bytes_per_client']:,}"]
          for t in a["table"]]
  return "\n\n".join([
      f"Optimizer: {a['optimizer']} ({a['chosen_from']}).",
      _table(["aggregator", "bits", "final accuracy", "vs plain (points)", "recall@3", "eval loss", "train s",
              "time vs plain", "values clipped", "upload B/client"], rows)])


def privacy_utility_markdown(summary: dict[str, Any]) -> str:
  a = summary["analysis"]
  rows = [[t["mode"], t["target_epsilon"], _fmt(t["epsilon"], 3), "-" if t["delta"] is None else f"{t['delta']:.2g}",
           _fmt(t["noise_multiplier"], 3), t["rounds"], _pct(t["accuracy"]),
           "-" if t["accuracy_share_of_no_dp"] is None else f"{100 * t['accuracy_share_of_no_dp']:.0f} %",
           "yes" if t["above_unigram"] else "no", _fmt(t.get("loss"), 3), t["train_seconds"]] for t in a["table"]]
  return "\n\n".join([
      f"{a['clients_per_round']} clients a round, clip {a['clip']:g}; unigram baseline "
      f"{_pct(a['unigram_accuracy'])}.",
      _table(["mode", "target epsilon", "epsilon reached", "delta", "noise multiplier", "rounds", "final accuracy",
              "of no-DP accuracy", "above unigram", "eval loss", "train s"], rows)])


def fedavg_vs_fedsgd_char_markdown(summary: dict[str, Any]) -> str:
  a = summary["analysis"]
  paper = a["paper"]

  def reached(row, name):
    raw, interpolated = row[f"rounds_to_{name}"], row[f"rounds_to_{name}_interpolated"]
    if raw is None:
      return "not reached"
    return f"{raw} ({interpolated:.1f})" if interpolated is not None else f"<= {raw}"

  rows = [[t["label"] + (" (pilot only)" if t.get("pilot") == "pilot only" else ""), t["epochs"],
           t["batch_size"], f"{t['learning_rate']:.3g}",
           f"{t['rounds']} of {max(t['rounds'], t['planned_rounds'])}",  # a pilot may have run past its end
           t.get("stop") or "-", _pct(t["final_accuracy"]), _pct(t["best_accuracy"]),
           reached(t, "54"), paper["rounds"].get(t["method"], "-"), reached(t, "fedsgd_best"), _speedup(t),
           _fmt(t.get("median_round_seconds"), 1), t["train_seconds"]] for t in a["table"]]
  second = a.get("second_target")
  return "\n\n".join([
      _char_split_line(a),
      f"Clients per round: {a.get('clients_per_round')} (C = 0.1 at paper and full scale); unigram baseline "
      f"{_pct(a['unigram_accuracy'])}; FedSGD's best accuracy, floored to 0.1 points, "
      f"{_pct(second) if second else '-'} is the second target.",
      _table(["run", "E", "B", "lr", "rounds run", "stopped", "final accuracy", "best accuracy",
              "rounds to 54 % (interpolated)", "paper: rounds to 54 %",
              "rounds to FedSGD's best (interpolated)", "speed-up there (direction)", "median round s", "train s"],
             rows),
      "Rounds to a target: the first evaluated round at or above it, and in brackets where the best-so-far "
      "curve, linear between evaluations, reaches it (the paper's reading); \"<= N\": already there at the "
      "first evaluation. Speed-ups divide interpolated rounds.",
      f"Paper speed-ups over FedSGD at 54 %: E = 1, B = 10: {paper['speedup']['fedavg_e1_b10']}x; "
      f"E = 5, B = 10: {paper['speedup']['fedavg_e5_b10']}x."])


def _char_split_line(analysis: dict[str, Any]) -> str:
  """The split's clients, characters and u beside McMahan et al.'s (Section 3, Table 2)."""
  data, paper = analysis.get("data"), analysis["paper"]
  if not data:
    return f"Unit: {analysis['unit']}."
  u = ", ".join(f"{k} {v:.2f} ({paper['updates_per_round'][k]})" for k, v in data["updates_per_round"].items())
  return (f"Unit: {analysis['unit']}; {data['clients']:,} clients ({paper['clients']:,}), "
          f"{data['train_characters']:,} / {data['test_characters']:,} train / test characters "
          f"({paper['train_characters']:,} / {paper['test_characters']:,}); {data['train_windows']:,} / "
          f"{data['test_windows']:,} windows; u = E n / (K B): {u} (the paper's in brackets).")


def _speedup(row: dict[str, Any]) -> str:
  """'23.8x', '>= 60x' where the run was there at its first evaluation, '-' for FedSGD or unreached."""
  value = row.get("speedup_at_fedsgd_best")
  if value is None:
    return "-"
  return (">= " if row.get("speedup_is_lower_bound") else "") + f"{value:.3g}x"


def adaptive_optimizers_char_markdown(summary: dict[str, Any]) -> str:
  a = summary["analysis"]
  rows = [[t["algorithm"], f"{t['server_lr']:.3g}", f"{t['epsilon']:.3g}", f"{t['rounds']} of {t['planned_rounds']}",
           _pct(t["final_accuracy"]), _pct(t["last_100_rounds_accuracy"]), t["train_seconds"]]
          for t in a["table"]]
  return "\n\n".join([
      _table(["algorithm", "server lr", "epsilon", "rounds run", "final accuracy",
              "mean of the last 100 rounds' evaluations", "train s"], rows),
      f"Ranking by final accuracy: {' > '.join(a['ranking'])}. Unigram baseline {_pct(a['unigram_accuracy'])}."])


RENDERERS = {"fedavg_vs_fedsgd_char": fedavg_vs_fedsgd_char_markdown,
             "adaptive_optimizers_char": adaptive_optimizers_char_markdown,
             "fedavg_vs_fedsgd": fedavg_vs_fedsgd_markdown,
             "adaptive_optimizers": adaptive_optimizers_markdown,
             "federated_vs_centralized": federated_vs_centralized_markdown,
             "secure_cost": secure_cost_markdown,
             "privacy_utility": privacy_utility_markdown}


def markdown(summary: dict[str, Any]) -> str:
  """The tables of one experiment's summary, with its command, hardware and wall time."""
  body = RENDERERS[summary["experiment"]](summary)
  minutes = summary["wall_seconds"] / 60
  return (f"{body}\n\nCommand: `{summary['command']}` ({summary['scale']} scale); "
          f"{summary['hardware']}; wall time of its last invocation {minutes:.1f} min (a resumed experiment's "
          f"earlier rounds are in train s); {summary['date']}.")


def figure_name(experiment: str) -> str:
  return f"{experiment}.png"


def save_figure(summary: dict[str, Any], out_dir: str) -> str:
  """Draws `summary`'s figure into `out_dir/<experiment>.png`; returns the path."""
  from tff_research.papers import common  # pylint: disable=g-import-not-at-top
  return common.save_figure(plot_summary(summary), os.path.join(out_dir, figure_name(summary["experiment"])))


def plot_summary(summary: dict[str, Any]):
  """An experiment's figure, drawn from its summary.json alone (curves and tables); returns it."""
  from tff_research.papers import common  # pylint: disable=g-import-not-at-top
  a = summary["analysis"]
  name = summary["experiment"]
  if name == "privacy_utility":
    return _plot_privacy_utility(summary)
  bars = name in ("adaptive_optimizers", "federated_vs_centralized")
  curves = _labelled_curves(summary)
  panels = (1 if curves else 0) + (1 if bars else 0)
  fig, axes = common.new_figure(max(panels, 1), 6.0)
  if bars:
    ax = axes.pop(0)
    if name == "adaptive_optimizers":
      ax.bar([t["algorithm"] for t in a["table"]], [t["accuracy_mean"] for t in a["table"]],
             yerr=[t["accuracy_std"] for t in a["table"]], capsize=4)
      ax.set_ylabel("final accuracy (mean ± std over seeds)")
    else:
      names = [t["training"].split(" (")[0] for t in a["table"]]
      xs = range(len(names))
      ax.bar([x - 0.2 for x in xs], [t["recall_at_1"] for t in a["table"]], 0.4, label="recall@1")
      ax.bar([x + 0.2 for x in xs], [t["recall_at_3"] for t in a["table"]], 0.4, label="recall@3")
      ax.set_xticks(list(xs))
      ax.set_xticklabels(names)
      ax.legend(fontsize=8)
    ax.axhline(a["unigram_accuracy"], ls=":", color="gray", label="unigram baseline")
    ax.set_title(TITLES[name])
  if curves:
    ax = axes.pop(0)
    for label, curve in curves.items():
      if curve:
        xs, ys = zip(*curve)
        ax.plot(xs, ys, marker="o", ms=3, label=label)
    target = a.get("target_accuracy", a.get("paper", {}).get("target_accuracy"))
    if target:
      ax.axhline(target, ls="--", color="black", lw=1, label="target")
    ax.axhline(a["unigram_accuracy"], ls=":", color="gray", lw=1, label="unigram baseline")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (without padding)" if name.endswith("_char")
                  else "test accuracy (no special tokens)")
    ax.set_title("evaluation curves (seed 0)" if bars else textwrap.fill(TITLES[name], 60))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  return fig


def _plot_privacy_utility(summary: dict[str, Any]):
  """Final accuracy against the epsilon each DP run reached, one line per mode, no DP and unigram as levels."""
  from tff_research.papers import common  # pylint: disable=g-import-not-at-top
  a = summary["analysis"]
  fig, axes = common.new_figure(1, 6.0)
  ax = axes[0]
  for mode in sorted({t["mode"] for t in a["table"]} - {"none"}):
    points = sorted((t["epsilon"], t["accuracy"]) for t in a["table"] if t["mode"] == mode and t["epsilon"])
    if points:
      ax.plot(*zip(*points), marker="o", label=mode)
  for t in a["table"]:
    if t["mode"] == "none":
      ax.axhline(t["accuracy"], ls="--", color="black", lw=1, label="no DP")
  ax.axhline(a["unigram_accuracy"], ls=":", color="gray", lw=1, label="unigram baseline")
  ax.set_xscale("log")
  epsilons = [t["epsilon"] for t in a["table"] if t["epsilon"]]
  if epsilons:  # plain numbers on the log axis, not powers of ten
    ticks = [v for v in (0.5, 1, 2, 5, 10, 20, 50) if min(epsilons) / 1.5 <= v <= max(epsilons) * 1.5]
    ax.set_xticks(ticks, [f"{v:g}" for v in ticks], minor=False)
    ax.set_xticks([], minor=True)
  ax.set_xlabel("epsilon after the run (delta in the table)")
  ax.set_ylabel("final test accuracy (no special tokens)")
  ax.set_title(textwrap.fill(TITLES["privacy_utility"], 60))
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return fig


def _labelled_curves(summary: dict[str, Any]) -> dict[str, list]:
  """The summary's evaluation curves under the names its figure shows."""
  a = summary["analysis"]
  curves = a.get("curves", {})
  if summary["experiment"] == "adaptive_optimizers":  # seed 0 at each optimizer's chosen learning rate
    from tff_research.papers import adaptive_optimizers  # pylint: disable=g-import-not-at-top
    names = {spec[0]: opt for opt, spec in adaptive_optimizers.OPTIMIZERS.items()}
    chosen = {}
    for t in a["table"]:
      exponent = float(t["lr_vs_paper"].split("^")[1])
      label = adaptive_optimizers.run_label(names[t["algorithm"]], exponent, 0)
      if label in curves:
        chosen[f"{t['algorithm']} (lr {t['server_lr']:.3g})"] = curves[label]
    return chosen
  if summary["experiment"] == "adaptive_optimizers_char":  # run labels -> the paper's method names
    from tff_research.papers import adaptive_optimizers_char  # pylint: disable=g-import-not-at-top
    return {adaptive_optimizers_char.OPTIMIZERS.get(label, (label,))[0]: curve for label, curve in curves.items()}
  if summary["experiment"] == "fedavg_vs_fedsgd_char":  # run labels -> method, E, B, lr as the paper writes them
    return {_fedavg_vs_fedsgd_name(t): curves[t["label"]] for t in a["table"] if t["label"] in curves}
  return curves


def _fedavg_vs_fedsgd_name(row: dict[str, Any]) -> str:
  """'FedAvg E=5, B=10, lr 1.47' or 'FedSGD, lr 0.682 (pilot only)'."""
  name = "FedSGD" if row["method"] == "fedsgd" else f"FedAvg E={row['epochs']}, B={row['batch_size']}"
  return f"{name}, lr {row['learning_rate']:.3g}" + (f" ({row['pilot']})" if row.get("pilot") else "")


def publish(results_dir: str, out_dir: str = PUBLISHED_DIR) -> list[str]:
  """Copies each experiment's summary.json and results.csv to `out_dir/<experiment>/` and draws its figure there."""
  copied = []
  for name in ORDER:
    source = os.path.join(results_dir, name)
    if not os.path.isfile(os.path.join(source, "summary.json")):
      continue
    target = os.path.join(out_dir, name)
    os.makedirs(target, exist_ok=True)
    for file_name in ("summary.json", "results.csv"):
      shutil.copyfile(os.path.join(source, file_name), os.path.join(target, file_name))
      copied.append(os.path.join(target, file_name))
    with open(os.path.join(source, "summary.json"), encoding="utf-8") as f:
      copied.append(save_figure(json.load(f), target))
  return copied


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("results_dir", help="e.g. results/papers/paper or reproduction")
  parser.add_argument("--publish", metavar="DIR", help="copy summaries, tables and plots to DIR")
  args = parser.parse_args(argv)
  summaries = load_summaries(args.results_dir)
  if not summaries:
    print(f"error: no experiment summary.json under {args.results_dir}", file=sys.stderr)
    return 2
  for name, summary in summaries.items():
    print(f"## {name}\n\n{markdown(summary)}\n")
  if args.publish:
    for path in publish(args.results_dir, args.publish):
      print(f"published {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
