"""Reproductions of published federated NWP results (see REPRODUCTION.md).

One module per experiment (plan, analysis, plot); `runner` runs them and
`common` holds what they share. Scripts in `experiments/` only parse flags.
"""
