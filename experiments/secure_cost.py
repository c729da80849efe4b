r"""Experiment 4: secure aggregation at several bit-widths vs plain, on experiment 2's best optimizer.

  python -m experiments.secure_cost --scale=paper

Logic: `tff_research.papers.secure_cost`; results in
results/papers/SCALE/secure_cost/ (see REPRODUCTION.md). Run experiment 2
first to use its best optimizer (else FedAdam at the paper's lr).
"""
from tff_research.papers import cli

if __name__ == "__main__":
  cli.run_main(["secure_cost"])
