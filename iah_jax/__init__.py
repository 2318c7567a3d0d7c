"""iah_jax: Instance-Aware Hashing (Lai et al., IEEE TIP 2016) in JAX/Flax (Linen).

Submodules: ``ops`` (SPP, cross-hypothesis pooling, Kronecker fusion), ``losses``, ``models``,
``data``, ``retrieval``, ``metrics``, ``train``. Import them explicitly, e.g.
``from iah_jax import ops``; nothing heavy is imported here.
"""

__version__ = "0.1.0"
