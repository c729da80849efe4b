"""Keras next-word-prediction models (import `tff_research.models.nwp`)."""
