"""`load_model(run_dir) -> Encoder`: a trained run restored for encoding users' photos.

    encoder = load_model("runs/default/q16_b4")
    outputs = encoder.encode([photo, ...])   # uint8 [H, W, 3] arrays or image paths

The encoder runs the main job's own jit encode step (`evaluate.make_encode_step`, the one the
evaluation uses), over a mesh of every device JAX sees, in batches of the run's
``eval.batch_size`` (the last batch padded by repeating its last row, as the evaluation does), on
inputs prepared as the evaluation prepared the dataset (`preprocess`). So a photo that is a
dataset image gets bit for bit the codes the main job computed for it.
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from iah_jax import run_manifest
from iah_jax import evaluate
from iah_jax import train
from iah_jax.serving import preprocess
from iah_jax.serving import run_dirs
from iah_jax.serving.errors import ServingError


class Encoder:
  """A restored run: `encode` photos into codes and probabilities (see the module docstring).

  Attributes:
    run_dir, manifest, config: the run and its config (single (q, b) pair).
    step: the training step of the restored checkpoint.
    method, semantic_bits, bits_per_category, num_classes, class_names, num_proposals,
    image_size: read from the manifest.
    outputs: names `encode` returns besides "proposals" (e.g. "semantic_codes",
      "category_codes", "label_probs", "bit_weights", "proposal_label_probs").
    batch_size: images per jit call, rounded up to a multiple of the devices; default the run's
      eval.batch_size, which makes the codes bit-identical to the evaluation's (another size
      compiles the step for another shape, whose floats may differ in the last bits).
    preparation: the `preprocess.PhotoPreparation` of the run.
  """

  def __init__(self, run_dir: str, manifest: dict, model, state, mesh, batch_size=None):
    self.run_dir = os.path.abspath(run_dir)
    self.manifest = manifest
    self.config = run_manifest.config_of(manifest)
    dataset = manifest["dataset"]
    self.method = manifest["method"]
    self.semantic_bits = int(manifest["semantic_bits"])
    self.bits_per_category = int(manifest["bits_per_category"])
    self.num_classes = int(dataset["num_classes"])
    self.class_names = list(dataset["class_names"])
    self.num_proposals = int(dataset["num_proposals"])
    self.image_size = int(dataset["image_size"])
    self.preparation = preprocess.PhotoPreparation(dataset)
    self._model, self._state, self._mesh = model, state, mesh
    self.step = int(jax.device_get(state.step))  # the checkpoint restored
    batch_size = int(batch_size or self.config.eval.batch_size)
    self.batch_size = batch_size + (-batch_size) % mesh.size
    self._encode_step = evaluate.make_encode_step(model, mesh, self.config)
    images, proposals = self._padded(np.zeros((1, self.image_size, self.image_size, 3)), None)
    code_shapes = self._encode_step.eval_shape(state, images, proposals)
    has_proposal_probs = jax.eval_shape(
        lambda *args: {
            name: value
            for name, value in self._apply(*args).items()
            if name == "proposal_label_probs"  # outputs also hold non-arrays (loss options)
        },
        state.params,
        state.batch_stats,
        images,
        proposals,
    )
    self._proposal_probs_step = None
    if has_proposal_probs:
      replicated = NamedSharding(mesh, PartitionSpec())
      data = NamedSharding(mesh, PartitionSpec("data"))
      self._proposal_probs_step = jax.jit(
          lambda state, images, proposals: self._apply(
              state.params, state.batch_stats, images, proposals
          )["proposal_label_probs"],
          in_shardings=(replicated, data, data),
          out_shardings=replicated,
      )
    self.outputs = tuple(code_shapes) + (
        ("proposal_label_probs",) if self._proposal_probs_step else ()
    )

  def backbone_variables(self) -> dict:
    """The restored backbone's variables as NumPy arrays: {'params': ..., 'batch_stats': ...}
    (the trees under the model's `backbone` module; batch_stats {} for a backbone without)."""
    from iah_jax.baselines import features  # pylint: disable=g-import-not-at-top

    variables = features.backbone_variables(
        {"params": self._state.params, "batch_stats": self._state.batch_stats}
    )
    variables.setdefault("batch_stats", {})
    return jax.tree.map(np.asarray, jax.device_get(variables))

  def _apply(self, params, batch_stats, images, proposals):
    variables = {"params": params}
    if jax.tree.leaves(batch_stats):
      variables["batch_stats"] = batch_stats
    return self._model.apply(variables, images, proposals, train=False)

  # -- inputs ---------------------------------------------------------------------------------

  def proposals(self, image: np.ndarray) -> np.ndarray:
    """float32 [N, 4] proposals of a uint8 [H, W, 3] photo with the run's proposal method."""
    return self.preparation.proposals(image)

  def model_inputs(self, images: Sequence[np.ndarray]) -> np.ndarray:
    """float32 [n, S, S, 3]: the photos as the run's evaluation pipeline would feed them."""
    return self.preparation.model_inputs(self.preparation.stored(image) for image in images)

  def _padded(self, images: np.ndarray, proposals: np.ndarray | None):
    """Host rows -> one full batch of global arrays (rows repeated past the end, as eval)."""
    count = images.shape[0]
    if proposals is None:
      proposals = np.tile(np.float32([0, 0, 1, 1]), (count, self.num_proposals, 1))
    pad = self.batch_size - count
    batch = {
        "image": np.concatenate([images, np.repeat(images[-1:], pad, 0)]).astype(np.float32),
        "proposals": np.concatenate([proposals, np.repeat(proposals[-1:], pad, 0)]).astype(
            np.float32
        ),
    }
    placed = train.to_global(batch, self._mesh, keys=("image", "proposals"))
    return placed["image"], placed["proposals"]

  # -- encoding -------------------------------------------------------------------------------

  def encode_inputs(
      self, model_images: np.ndarray, proposals: np.ndarray, proposal_probs: bool = False
  ) -> dict:
    """Encodes prepared inputs: float32 [n, S, S, 3] (`model_inputs`) and [n, N, 4] proposals.

    Returns NumPy arrays with n rows: ``semantic_codes`` uint8 [n, q] and, where the method
    has them, ``category_codes`` uint8 [n, c, b], ``label_probs`` [n, c], ``bit_weights``
    [n, q], and with `proposal_probs` (IAH) ``proposal_label_probs`` P [n, N, c].
    """
    model_images = np.asarray(model_images, np.float32)
    proposals = np.asarray(proposals, np.float32)
    count = model_images.shape[0]
    expected = (self.image_size, self.image_size, 3)
    if model_images.shape[1:] != expected or proposals.shape != (count, self.num_proposals, 4):
      raise ValueError(
          f"expected images [n, {', '.join(map(str, expected))}] and proposals "
          f"[n, {self.num_proposals}, 4], got {model_images.shape} and {proposals.shape}"
      )
    collected: dict[str, list] = {}
    for start in range(0, count, self.batch_size):
      stop = min(start + self.batch_size, count)
      images, boxes = self._padded(model_images[start:stop], proposals[start:stop])
      outputs = dict(jax.device_get(self._encode_step(self._state, images, boxes)))
      if proposal_probs and self._proposal_probs_step is not None:
        outputs["proposal_label_probs"] = jax.device_get(
            self._proposal_probs_step(self._state, images, boxes)
        )
      for name, value in outputs.items():
        collected.setdefault(name, []).append(np.asarray(value)[: stop - start])
    if not collected:
      empty = jax.eval_shape(self._encode_step, self._state, *self._padded(model_images[:1], None))
      return {name: np.zeros((0,) + shape.shape[1:], shape.dtype) for name, shape in empty.items()}
    return {name: np.concatenate(parts) for name, parts in collected.items()}

  def encode(self, images: Sequence, proposals=None, proposal_probs: bool = True) -> dict:
    """Encodes photos: uint8 [H, W, 3] RGB arrays of any size, or image paths.

    Args:
      images: the photos (a path that is missing or not an image raises ServingError).
      proposals: optional float32 [n, N, 4] boxes; default: computed with the run's method.
      proposal_probs: also return the per-proposal label probabilities (IAH's P, a second
        forward pass; methods without proposals have none).

    Returns:
      `encode_inputs`' dict plus ``proposals`` float32 [n, N, 4].
    """
    decoded = [
        preprocess.read_photo(image) if isinstance(image, (str, os.PathLike)) else image
        for image in images
    ]
    if not decoded:
      raise ValueError("no images to encode")
    if proposals is None:
      proposals = np.stack([self.proposals(image) for image in decoded])
    outputs = self.encode_inputs(self.model_inputs(decoded), proposals, proposal_probs)
    outputs["proposals"] = np.asarray(proposals, np.float32)
    return outputs


def load_model(run_dir: str, devices=None, batch_size: int | None = None) -> Encoder:
  """Restores the run in `run_dir` (WORKDIR/q<q>_b<b>) from its latest checkpoint (or, for runs
  with a validation split, the best one, as the main job evaluates it) and its manifest.

  Args:
    run_dir: the run directory.
    devices: the devices of the mesh (default: all JAX sees).
    batch_size: images per jit call (default: the run's eval.batch_size; see `Encoder`).

  Raises ServingError when the directory, its manifest or its checkpoint is missing.
  """
  manifest = run_dirs.check_run_dir(run_dir)
  config = run_manifest.config_of(manifest)
  dataset = manifest["dataset"]
  mesh = train.make_mesh(devices)
  model = train.build_model(
      config,
      int(dataset["num_classes"]),
      int(manifest["semantic_bits"]),
      int(manifest["bits_per_category"]),
  )
  # The optimiser only shapes the state (momentum buffers) orbax restores into.
  tx = train.make_optimizer(config, train.learning_rate_schedule(config, steps_per_epoch=1))
  # Restore into the abstract state (shapes, dtypes, replicated shardings): tracing
  # create_train_state under eval_shape skips compiling and running the initialiser.
  template = jax.eval_shape(
      lambda rng: train.create_train_state(
          model, tx, rng, mesh, int(dataset["image_size"]), int(dataset["num_proposals"])
      ),
      jax.random.PRNGKey(0),
  )
  manager = train.checkpoint_manager(os.path.join(run_dir, run_dirs.CHECKPOINTS), config)
  try:
    state = train.restore_latest(manager, template, best=bool(config.dataset.validation_split))
  finally:
    manager.close()
  if state is None:
    raise ServingError(f"run directory {run_dir} has no checkpoint to restore")
  return Encoder(run_dir, manifest, model, state, mesh, batch_size)
