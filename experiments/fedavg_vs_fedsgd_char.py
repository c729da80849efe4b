r"""McMahan et al. 2017, Table 2: FedSGD vs FedAvg on Shakespeare characters, rounds to 54 %.

  python -m experiments.fedavg_vs_fedsgd_char --scale=paper          # resumable; --until_round=N stops early

Logic: `tff_research.papers.fedavg_vs_fedsgd_char`; results in
results/papers/SCALE/fedavg_vs_fedsgd_char/ (see REPRODUCTION.md).
"""
from tff_research.papers import cli

if __name__ == "__main__":
  cli.run_main(["fedavg_vs_fedsgd_char"])
