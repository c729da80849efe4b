r"""Experiment 1: FedAvg vs FedSGD, rounds to a target accuracy (McMahan et al. 2017).

  python -m experiments.fedavg_vs_fedsgd --scale=paper

Logic: `tff_research.papers.fedavg_vs_fedsgd`; results in
results/papers/SCALE/fedavg_vs_fedsgd/ (see REPRODUCTION.md).
"""
from tff_research.papers import cli

if __name__ == "__main__":
  cli.run_main(["fedavg_vs_fedsgd"])
