r"""Reddi et al. 2021: FedAvg, FedAvgM, FedAdagrad, FedAdam, FedYogi on Shakespeare characters.

  python -m experiments.adaptive_optimizers_char --scale=paper          # resumable; --until_round=N stops early

Logic: `tff_research.papers.adaptive_optimizers_char`; results in
results/papers/SCALE/adaptive_optimizers_char/ (see REPRODUCTION.md).
"""
from tff_research.papers import cli

if __name__ == "__main__":
  cli.run_main(["adaptive_optimizers_char"])
