"""User-level differential privacy: its settings (`config`), its accounting (`accounting`), its aggregators.

`config`, `accounting` and `ddgauss_accounting` are plain Python
(dp_accounting; only DP-FTRL's rho-zCDP, `accounting.tree_zcdp`, loads
tensorflow_privacy and with it TensorFlow); `aggregators` builds TFF's DP
factories (central DP-FedAvg, DP-FTRL) and `distributed` the distributed
discrete Gaussian under our secure sum. Threat model and guarantees: the
README's "Differential privacy" section.
"""
