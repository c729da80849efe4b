"""User-level differential privacy: its settings (`config`), its accounting (`accounting`), its aggregators.

`config` and `accounting` are plain Python (dp_accounting; only DP-FTRL's
rho-zCDP, `accounting.tree_zcdp`, loads tensorflow_privacy and with it
TensorFlow); `aggregators` builds TFF's DP factories. Threat model and guarantees: the
README's "Differential privacy" section.
"""
