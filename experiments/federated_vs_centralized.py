r"""Experiment 3: federated vs centralized CIFG, recall@1 and @3 (Hard et al. 2018).

  python -m experiments.federated_vs_centralized --scale=paper

Logic: `tff_research.papers.federated_vs_centralized`; results in
results/papers/SCALE/federated_vs_centralized/ (see REPRODUCTION.md).
"""
from tff_research.papers import cli

if __name__ == "__main__":
  cli.run_main(["federated_vs_centralized"])
