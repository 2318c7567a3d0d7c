"""Method comparison (IAH Table II, Figs. 6-9): per-cell training / fitting and evaluation
(`cells`), and the Markdown + PNG report (`report`). Run it with `python -m iah_jax.compare`."""
