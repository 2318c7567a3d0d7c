"""iah_jax: Instance-Aware Hashing (Lai et al., IEEE TIP 2016) in JAX/Flax (Linen).

Submodules: ``ops`` (SPP, cross-hypothesis pooling, Kronecker fusion), ``losses``, ``models``,
``methods``, ``data``, ``train``, ``evaluate``, ``retrieval``, ``metrics``, ``baselines``,
``comparison``. Import them explicitly, e.g. ``from iah_jax import ops``; nothing heavy is
imported here.

The flow of a run: ``methods`` (the registry: what `config.method` builds, minimises and encodes,
and what its codes can be evaluated on) -> ``train`` (state, jit step, loop, checkpoints) ->
``evaluate`` (restore, encode, evaluate; ``evaluate.run`` is the main job).
"""

__version__ = "0.1.0"
