"""Flags shared by the paper-reproduction scripts in `experiments/`."""
from __future__ import annotations

import sys
from typing import Sequence

from absl import app
from absl import flags

from tff_research.papers import common

flags.DEFINE_enum("scale", "paper", list(common.SCALES),
                  "smoke: tiny model and data, seconds (tests); paper: the reproduction on 2 cores "
                  "(REPRODUCTION.md says how each differs from its paper); full: the papers' own budgets")
flags.DEFINE_integer("until_round", None, "stop every run at this round; rerunning resumes")
flags.DEFINE_string("output_dir", "results", "results go to OUTPUT_DIR/papers/SCALE/EXPERIMENT/")
flags.DEFINE_string("data_dir", None, "where corpora are cached (default: ~/.cache/tff_research)")
flags.DEFINE_bool("verbose", False, "show TensorFlow/TFF's own logs")
FLAGS = flags.FLAGS


def run_main(names: Sequence[str]) -> None:
  """`app.run` for a script that runs the experiments `names` in order."""
  from tff_research.runtime import logs  # pylint: disable=g-import-not-at-top
  logs.configure_logging(verbose="--verbose" in sys.argv or "--verbose=true" in sys.argv)

  def main(argv) -> int:
    del argv  # entry_point.parse_flags refused any left over
    from tff_research.papers import runner  # pylint: disable=g-import-not-at-top
    return runner.main(names, FLAGS.scale, FLAGS.output_dir, FLAGS.data_dir, FLAGS.verbose, FLAGS.until_round)

  from tff_research.learning import entry_point  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=entry_point.parse_flags)
