"""Federated text data: corpora by client, vocabulary, NWP token windows."""
from tff_research.data.datasets import dataset_names
from tff_research.data.datasets import load_federated_text
from tff_research.data.federated_text import DataError
from tff_research.data.federated_text import FederatedText
from tff_research.data.federated_text import split_by_order
from tff_research.data.vocab import Vocabulary
from tff_research.data.vocab import build_vocabulary
from tff_research.data.vocab import tokenize

__all__ = [
    "dataset_names",
    "load_federated_text",
    "DataError",
    "FederatedText",
    "split_by_order",
    "Vocabulary",
    "build_vocabulary",
    "tokenize",
]
