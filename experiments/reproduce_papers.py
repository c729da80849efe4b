r"""All four paper experiments in order (experiment 4 uses experiment 2's best optimizer).

  python -m experiments.reproduce_papers --scale=paper

See REPRODUCTION.md for what each one reproduces.
"""
from tff_research.papers import cli
from tff_research.papers import runner

if __name__ == "__main__":
  cli.run_main(list(runner.EXPERIMENTS))
