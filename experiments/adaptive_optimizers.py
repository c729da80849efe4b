r"""Experiment 2: FedAvg, FedAvgM, FedAdagrad, FedAdam, FedYogi (Reddi et al. 2021).

  python -m experiments.adaptive_optimizers --scale=paper

Logic: `tff_research.papers.adaptive_optimizers`; results in
results/papers/SCALE/adaptive_optimizers/ (see REPRODUCTION.md).
"""
from tff_research.papers import cli

if __name__ == "__main__":
  cli.run_main(["adaptive_optimizers"])
