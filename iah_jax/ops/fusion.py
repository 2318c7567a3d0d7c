"""Cross-hypothesis max-pooling (IAH eq. 1) and cross-proposal Kronecker fusion (IAH eq. 6)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_hypothesis_pool(proposal_scores: jax.Array) -> jax.Array:
  """Max over proposals: m_j = max_i M_ij (IAH eq. 1).

  Args:
    proposal_scores: M, [..., N, c] per-proposal category scores (leading axes are batch axes).
  Returns:
    m, [..., c].
  """
  if proposal_scores.ndim < 2:
    raise ValueError(f"proposal_scores must be [..., N, c], got shape {proposal_scores.shape}")
  return jnp.max(proposal_scores, axis=-2)


def kronecker_fusion(proposal_probs: jax.Array, proposal_hashes: jax.Array) -> jax.Array:
  """Cross-proposal fusion f = (1/N) sum_i P_i (Kronecker) H_i (IAH eq. 6).

  Group j of the c*b vector is f_j = (1/N) sum_i P_ij H_i, i.e. one einsum; the result keeps the
  groups as an explicit axis (reshape to [..., c*b] for the paper's flat vector, which is
  category-major exactly like the Kronecker product).

  Args:
    proposal_probs: P, [..., N, c] per-proposal label probabilities (eq. 5).
    proposal_hashes: H, [..., N, b] per-proposal hash-branch features.
  Returns:
    f, [..., c, b].
  """
  if proposal_probs.ndim < 2 or proposal_hashes.ndim < 2:
    raise ValueError(
        "kronecker_fusion expects P [..., N, c] and H [..., N, b], got shapes "
        f"{proposal_probs.shape} and {proposal_hashes.shape}"
    )
  if proposal_probs.shape[:-1] != proposal_hashes.shape[:-1]:
    raise ValueError(
        "P and H must agree on the batch and proposal axes, got "
        f"{proposal_probs.shape} and {proposal_hashes.shape}"
    )
  num_proposals = proposal_probs.shape[-2]
  return jnp.einsum("...nc,...nb->...cb", proposal_probs, proposal_hashes) / num_proposals
