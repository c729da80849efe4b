"""tff_research: federated next-word prediction research on TensorFlow Federated.

Modules, one concept each:
  data         federated text (Shakespeare by speaking role), vocabulary, tokenization
  models       Keras next-word-prediction models (LSTM / CIFG)
  metrics      NWP metrics: accuracy without special tokens, recall@k, perplexity
  learning     FedAvg and adaptive server optimizers, the training loop
  aggregation  pairwise-masked secure sum in Federated Core
  runtime      execution contexts and the TFF worker processes they own
  plots        learning curves from metrics.csv files

Importing this package does not import TensorFlow; submodules do. It sets
TensorFlow's C++ log level (TF_CPP_MIN_LOG_LEVEL) to 3, as
`runtime.configure_logging` does, where neither TensorFlow is imported yet
nor the variable set, so that a notebook importing the package in any
order does not print TF's start-up lines (errors still raise in Python);
`runtime.configure_logging(verbose=True)` (or the variable set before
importing) brings them back.
"""
import os as _os
import sys as _sys

__version__ = "0.1.0"

if "tensorflow" not in _sys.modules:
  _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
