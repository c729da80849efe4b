"""Metrics for next-word prediction (TensorFlow; import submodules directly)."""
