"""tff_research: federated next-word prediction research on TensorFlow Federated.

Modules, one concept each:
  data         federated text (Shakespeare by speaking role), vocabulary, tokenization
  models       Keras next-word-prediction models (LSTM / CIFG)
  metrics      NWP metrics: accuracy without special tokens, recall@k, perplexity
  learning     FedAvg and adaptive server optimizers, the training loop
  aggregation  pairwise-masked secure sum in Federated Core
  runtime      execution contexts and the TFF worker processes they own
  plots        learning curves from metrics.csv files

Importing this package does not import TensorFlow; submodules do.
"""
__version__ = "0.1.0"
