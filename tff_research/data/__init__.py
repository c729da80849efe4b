"""Federated text data: corpora by client, vocabulary, NWP token windows."""
from tff_research.data.datasets import dataset_names, load_federated_text
from tff_research.data.federated_text import DataError, FederatedText, split_by_order
from tff_research.data.vocab import Vocabulary, build_vocabulary, tokenize
