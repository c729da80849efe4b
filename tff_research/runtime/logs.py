"""Quiet TensorFlow/TFF log noise by default; `verbose=True` brings it back.

Must run before TensorFlow is imported for the C++ log level to take effect,
so entry points call it first thing.
"""
from __future__ import annotations

import logging
import os
import warnings


def configure_logging(verbose: bool = False) -> None:
  """Silences TF's C++ and Python logs and absl warnings unless `verbose`."""
  if verbose:
    os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # its errors at exit (a poller kick) are not the user's
  os.environ.setdefault("GLOG_minloglevel", "3")
  warnings.filterwarnings("ignore", category=DeprecationWarning)
  warnings.filterwarnings("ignore", category=FutureWarning)
  warnings.filterwarnings("ignore", category=UserWarning, module="keras")
  logging.getLogger("tensorflow").setLevel(logging.ERROR)
  logging.getLogger("absl").setLevel(logging.ERROR)
  try:
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
    absl_logging.set_verbosity(absl_logging.ERROR)
  except ImportError:
    pass
  import sys  # pylint: disable=g-import-not-at-top
  # In an interactive shell (Jupyter) TF sets its logger to INFO when it is
  # first imported, undoing the level above; import it now and set it after.
  if "tensorflow" in sys.modules or hasattr(sys, "ps1") or "ipykernel" in sys.modules:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.get_logger().setLevel(logging.ERROR)
