r"""Experiment 5: accuracy against epsilon for no DP, DP-FedAvg, DP-FTRL and distributed DP (Shakespeare words).

  python -m experiments.privacy_utility --scale=paper

Logic: `tff_research.papers.privacy_utility`; results in
results/papers/SCALE/privacy_utility/ (see REPRODUCTION.md).
"""
from tff_research.papers import cli

if __name__ == "__main__":
  cli.run_main(["privacy_utility"])
