"""Method comparison (IAH Table II, Figs. 6-9): `compare` (runner), per-cell training / fitting
and evaluation (`cells`), and the Markdown + PNG report (`report`). The command line is
`python -m iah_jax.compare`."""

from iah_jax.comparison.runner import compare
