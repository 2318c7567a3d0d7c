"""Pure, jit-able and vmap-able functions that are the point of IAH.

- ``spp``: spatial pyramid max-pooling of region proposals over one feature map.
- ``cross_hypothesis_pool``: max over proposals (IAH eq. 1).
- ``kronecker_fusion``: probability-weighted mean of proposal features (IAH eq. 6).

Backbone kernels with custom gradients (fast on XLA's CPU backend), used by GoogLeNet:
``pooling_kernels.max_pool_ceil`` (torch's ceil-mode max-pool) and ``conv_kernels``
(``conv_gemm_grads``, ``resolve_conv_impl``).
"""

from iah_jax.ops.fusion import cross_hypothesis_pool, kronecker_fusion
from iah_jax.ops.pyramid_pooling import batched_spp, spp, spp_bin_ranges, spp_output_dim

__all__ = [
    "spp",
    "batched_spp",
    "spp_bin_ranges",
    "spp_output_dim",
    "cross_hypothesis_pool",
    "kronecker_fusion",
]
