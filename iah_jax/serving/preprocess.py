"""A user's photo -> the model's inputs, exactly as the run's evaluation saw its dataset's images.

The evaluation pipeline (`iah_jax.data.pipeline`) reads the image a dataset builder stored,
decodes it with TensorFlow and resizes it to the model's input (`pipeline.resize_for_model`).
A photo therefore goes through what the builder did to its source files, then through the same
tf.data map:

1. decode with PIL to uint8 RGB (`iah_jax.data.images.read_image`, as every builder reads files);
2. region proposals on that full-resolution image with the run's proposal method and options
   (`ProposalSettings.compute`, as `prepare_proposals` does for the real datasets; the embedded
   synthetic scenes use the generic generator with its defaults on the generated image);
3. the stored copy: downscaled to the builder's ``image_max_side`` (PIL box filter,
   `images.resize_to_max_side`) and, for datasets stored as JPEG, encoded with the TFDS image
   feature the builders use and decoded by TensorFlow (so JPEG's loss is the same); PNG is
   lossless, so the pixels themselves stand for the stored file;
4. `pipeline.resize_for_model`: a tf.data map for streams (indexing), the same function
   called eagerly for a few photos (queries); both give the evaluation pipeline's values to
   the bit.
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator

import numpy as np

from iah_jax.data import images as images_lib
from iah_jax.serving.errors import ServingError


def read_photo(path: str | os.PathLike) -> np.ndarray:
  """uint8 [H, W, 3] RGB of an image file; ServingError naming the file when it is missing or
  not a decodable image."""
  try:
    return images_lib.read_image(path)
  except FileNotFoundError:
    raise ServingError(f"image file not found: {os.fspath(path)}") from None
  except images_lib.CorruptImageError as err:
    raise ServingError(f"{os.fspath(path)} is not a readable image ({err})") from None


class PhotoPreparation:
  """The input side of a run, from its manifest's ``dataset`` facts (see `iah_jax.run_manifest`).

  Attributes:
    image_size: S, the model's input side.
    num_proposals: N.
    proposal_settings: the run's `ProposalSettings`.
  """

  def __init__(self, dataset_facts: dict):
    from iah_jax.data import prepare

    self.image_size = int(dataset_facts["image_size"])
    self.num_proposals = int(dataset_facts["num_proposals"])
    stored = dataset_facts["stored_image"]
    self.encoding_format = str(stored["encoding_format"])
    self.max_side = int(stored["max_side"])
    if self.encoding_format not in ("png", "jpeg"):
      raise ServingError(
          f"the run's dataset stored its images as {self.encoding_format!r}; serving knows how "
          "to reproduce 'png' and 'jpeg'"
      )
    if dataset_facts.get("proposal_settings") is None:
      raise ServingError(
          "the run's manifest does not say how its proposals were computed "
          "(dataset.proposal_settings is null), so photos cannot be treated the same way"
      )
    self.proposal_settings = prepare.ProposalSettings(**dataset_facts["proposal_settings"])
    if self.proposal_settings.num_proposals != self.num_proposals:
      raise ServingError(
          f"the run's manifest says N = {self.num_proposals} proposals but its proposal settings "
          f"give {self.proposal_settings.num_proposals}"
      )
    self._image_feature = None

  def proposals(self, image: np.ndarray) -> np.ndarray:
    """float32 [N, 4] region proposals of a full-resolution uint8 [H, W, 3] photo."""
    return self.proposal_settings.compute(image)

  def stored(self, image: np.ndarray) -> np.ndarray | bytes:
    """What the run's dataset would have stored for this photo: uint8 pixels (PNG datasets:
    lossless, the pixels are the file) or the encoded JPEG bytes."""
    image = images_lib.resize_to_max_side(image, self.max_side or None)
    if self.encoding_format == "png":
      return image
    if self._image_feature is None:
      from iah_jax.data import features  # late: TensorFlow Datasets

      self._image_feature = features.example_features(1, 1, encoding_format="jpeg")[features.IMAGE]
    return self._image_feature.encode_example(image)

  def _to_model(self):
    """The graph-mode map from one `stored` output to float32 [S, S, 3]."""
    import tensorflow as tf

    from iah_jax.data import pipeline  # also hides accelerators from TensorFlow

    if self.encoding_format == "png":
      signature = tf.TensorSpec((None, None, 3), tf.uint8)
      to_model = lambda image: pipeline.resize_for_model(image, self.image_size)
    else:
      signature = tf.TensorSpec((), tf.string)
      to_model = lambda data: pipeline.resize_for_model(
          tf.io.decode_image(data, channels=3, expand_animations=False), self.image_size
      )
    return signature, to_model

  def model_inputs(self, stored_images: Iterable) -> np.ndarray:
    """float32 [n, S, S, 3] from a few `stored` outputs, one eager call of the same map as
    `model_batches` per image (no tf.data pipeline to build). Not a tf.function: Grappler
    rewrites its graph (the division by 255) and changes the last float bit, while eager
    execution gives exactly the evaluation pipeline's values."""
    import tensorflow as tf

    _, to_model = self._to_model()
    rows = [to_model(tf.constant(image)).numpy() for image in stored_images]
    if not rows:
      return np.zeros((0, self.image_size, self.image_size, 3), np.float32)
    return np.stack(rows)

  def model_batches(self, stored_images: Iterable, batch_size: int) -> Iterator[np.ndarray]:
    """float32 [<= batch_size, S, S, 3] batches of model inputs from a stream of `stored`
    outputs, in order: the evaluation pipeline's map in a parallel tf.data pipeline."""
    import tensorflow as tf

    signature, to_model = self._to_model()
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(stored_images), output_signature=signature
    )
    dataset = dataset.map(to_model, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size).prefetch(2)
    yield from dataset.as_numpy_iterator()
