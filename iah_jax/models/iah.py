"""The Instance-Aware Hashing network (IAH, Lai et al. 2016, Fig. 2).

image -> backbone -> 1x1 conv to 32 maps -> SPP of each of the N proposals (d = 32 * 30 = 960)
  -> label branch: FC d -> c per proposal (M), max over proposals (m, eq. 1), p = softmax(m)
     (eq. 2), P = row-wise softmax(M) (eq. 5)
  -> hash branch:  FC d -> b per proposal (H)
  -> cross-proposal fusion f = (1/N) sum_i P_i (Kronecker) H_i (eq. 6): c groups of b
  -> category-aware codes 1[f > t], semantic features s = FC(f) -> q, semantic codes 1[s > t].

Bounding (METHODS.md 1.9, our choice since the paper is silent): with an unbounded s the margin-1
hinge is satisfied by scaling outputs up, so H and s pass through a squashing function:
"tanh" (threshold t = 0, the default) or "sigmoid" (threshold t = 0.5, as DNNH does). f is then a
probability-weighted mean of bounded vectors and is bounded too.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from iah_jax import ops
from iah_jax.models.hashing import binarize
from iah_jax.models.hashing import bound
from iah_jax.ops import dense


def category_codes(
    category_features: jax.Array, proposal_label_probs: jax.Array, output_bound: str = "tanh"
) -> jax.Array:
  """Category-aware codes b^(j) [..., c, b] (uint8) from f [..., c, b] and P [..., N, c].

  f_j divided by mean_i P_ij is the P-weighted mean of the bounded H_i, so it lies in the bound's
  range and the bound's threshold applies (for "tanh" this is exactly the paper's 1[f_j > 0]).
  """
  weight = jnp.mean(proposal_label_probs, axis=-2)[..., None]  # [..., c, 1]
  return binarize(category_features / jnp.maximum(weight, 1e-12), output_bound)


def class_bit_weights(
    semantic_kernel: jax.Array, num_classes: int, bits_per_category: int
) -> jax.Array:
  """Class-wise bit weights W [c, q] read off the semantic FC kernel [c * b, q] (our choice).

  Semantic bit k is a function of the c category pieces f_j; W_jk = the L2 norm of the kernel
  rows that carry piece j into bit k (how strongly category j drives bit k), each row of W scaled
  to mean 1. With IAH's label probabilities p, w = p @ W gives the query-adaptive bit weights of
  QaDWH's ranking (METHODS.md section 4: "the same ranking on top of IAH's semantic codes").
  """
  kernel = jax.lax.stop_gradient(semantic_kernel.astype(jnp.float32))
  pieces = kernel.reshape(num_classes, bits_per_category, -1)  # [c, b, q]
  norms = jnp.sqrt(jnp.sum(pieces * pieces, axis=1))  # [c, q]
  return norms / jnp.maximum(jnp.mean(norms, axis=-1, keepdims=True), 1e-12)


class IAH(nn.Module):
  """IAH network. `__call__(images[B,H,W,3], proposals[B,N,4], train) -> dict` with

  - ``label_logits``: m [B, c] (eq. 1), ``label_probs``: p [B, c] (eq. 2),
  - ``proposal_label_probs``: P [B, N, c] (eq. 5),
  - ``category_features``: f [B, c, b] (eq. 6), ``semantic_features``: s [B, q],
  - ``class_bit_weights``: W [c, q] from the semantic FC (see `class_bit_weights`).

  Attributes:
    backbone: any module mapping images [B, H, W, 3] in [0, 1] to a feature map [B, h, w, C].
    num_classes: c.
    bits_per_category: b.
    semantic_bits: q.
    reduced_maps: channels of the reduction conv before SPP (32 in the paper).
    spp_levels: pyramid levels ((4, 3, 2, 1) in the paper: d = 32 * 30 = 960).
    output_bound: "tanh" or "sigmoid", see the module docstring.
    dtype: computation dtype of the head (parameters stay float32; SPP and the losses' inputs are
      cast to float32).
  """

  backbone: nn.Module
  num_classes: int
  bits_per_category: int
  semantic_bits: int
  reduced_maps: int = 32
  spp_levels: Sequence[int] = (4, 3, 2, 1)
  output_bound: str = "tanh"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, proposals: jax.Array, train: bool = False) -> dict:
    squash, _ = bound(self.output_bound)
    feature_map = self.backbone(images, train=train)
    feature_map = nn.relu(
        nn.Conv(self.reduced_maps, (1, 1), dtype=self.dtype, name="reduce_conv")(feature_map)
    )
    pooled = ops.batched_spp(
        feature_map.astype(jnp.float32), proposals.astype(jnp.float32), tuple(self.spp_levels)
    )  # D: [B, N, d]

    # Narrow FCs over all B * N proposals: a dot_general whose kernel gradient XLA:CPU runs
    # faster (same values; ops/dense.py).
    narrow_dot = dense.narrow_dense_dot_general()
    label_fc = nn.Dense(self.num_classes, dtype=self.dtype, dot_general=narrow_dot, name="label_fc")
    hash_fc = nn.Dense(
        self.bits_per_category, dtype=self.dtype, dot_general=narrow_dot, name="hash_fc"
    )
    proposal_scores = label_fc(pooled).astype(jnp.float32)  # M
    label_logits = ops.cross_hypothesis_pool(proposal_scores)  # m
    proposal_label_probs = jax.nn.softmax(proposal_scores, axis=-1)  # P
    proposal_hashes = squash(hash_fc(pooled).astype(jnp.float32))  # H
    category_features = ops.kronecker_fusion(proposal_label_probs, proposal_hashes)  # f
    flat = category_features.reshape(category_features.shape[0], -1)
    semantic_fc = nn.Dense(self.semantic_bits, dtype=self.dtype, name="semantic_fc")
    semantic_features = squash(semantic_fc(flat).astype(jnp.float32))  # s
    return {
        "class_bit_weights": class_bit_weights(
            semantic_fc.variables["params"]["kernel"], self.num_classes, self.bits_per_category
        ),
        "label_logits": label_logits,
        "label_probs": jax.nn.softmax(label_logits, axis=-1),
        "proposal_label_probs": proposal_label_probs,
        "category_features": category_features,
        "semantic_features": semantic_features,
    }
