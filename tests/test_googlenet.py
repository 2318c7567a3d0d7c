"""Flax GoogLeNet: ceil-mode pooling, parameter count, shapes, input normalisation, mixed
precision, and the strict pretrained ``load``. Runs without torch except the one pooling test
that compares with torch directly; parity with torchvision is in test_convert_googlenet.py."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iah_jax.models import pretrained
from iah_jax.models.pretrained import (
    flatten_variables,
    save_converted,
    unflatten_variables,
)
from iah_jax.ops.conv_kernels import conv_gemm_grads
from iah_jax.ops.pooling_kernels import max_pool_ceil
from iah_jax.models.googlenet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    GoogLeNet,
    GoogLeNetBackbone,
    normalize_unit_images,
)

# torchvision.models.googlenet(aux_logits=False): sum(p.numel() for p in model.parameters()).
TORCHVISION_GOOGLENET_PARAMS = 6_624_904
FC_PARAMS = 1024 * 1000 + 1000


# Eager (un-jitted) Flax runs GoogLeNet op by op and is ~10x slower than one compiled call.
@functools.partial(jax.jit, static_argnums=0)
def init_jit(module, images):
  return module.init(jax.random.PRNGKey(0), images)


@functools.partial(jax.jit, static_argnums=0)
def apply_eval(module, variables, images):
  return module.apply(variables, images, train=False)


@functools.partial(jax.jit, static_argnums=0)
def apply_train(module, variables, images):
  return module.apply(variables, images, train=True, mutable=["batch_stats"])


def naive_max_pool_ceil(x, window, stride, padding, out_size):
  """Loop reference on x[H, W]: window i starts at i*stride - padding; cells outside are ignored."""
  out = np.empty((out_size, out_size), x.dtype)
  for i in range(out_size):
    for j in range(out_size):
      r0, c0 = i * stride - padding, j * stride - padding
      rows = slice(max(r0, 0), min(r0 + window, x.shape[0]))
      cols = slice(max(c0, 0), min(c0 + window, x.shape[1]))
      out[i, j] = x[rows, cols].max()
  return out


# (size, window, stride, padding, torch's ceil_mode output size), sizes checked with torch 2.14.
# 112 and 7: ceil differs from floor (55, 3); 5 and 8: the last ceil window would start in the
# right padding, so torch drops it.
@pytest.mark.parametrize(
    "size,window,stride,padding,expected",
    [
        (112, 3, 2, 0, 56),
        (7, 2, 2, 0, 4),
        (7, 3, 2, 0, 3),
        (6, 3, 1, 1, 6),
        (5, 2, 2, 1, 3),
        (8, 3, 3, 1, 3),
        (9, 3, 3, 1, 4),
    ],
)
def test_max_pool_ceil_matches_loop_reference(size, window, stride, padding, expected):
  x = np.random.default_rng(size).standard_normal((size, size)).astype(np.float32)
  pooled = max_pool_ceil(jnp.asarray(x)[None, :, :, None], window, stride, padding)
  assert pooled.shape == (1, expected, expected, 1)
  np.testing.assert_array_equal(
      np.asarray(pooled)[0, :, :, 0], naive_max_pool_ceil(x, window, stride, padding, expected)
  )


def test_max_pool_ceil_and_its_gradient_match_torch_on_a_grid():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  for height, width in [(4, 7), (5, 5), (6, 9), (7, 8), (8, 11), (11, 14), (13, 12)]:
    for window, stride, padding in [(3, 2, 0), (2, 2, 0), (3, 1, 1), (4, 3, 2)]:
      x = rng.standard_normal((2, 3, height, width)).astype(np.float32)
      x_torch = torch.from_numpy(x).requires_grad_(True)
      pooled_torch = torch.nn.functional.max_pool2d(
          x_torch, window, stride, padding, ceil_mode=True
      )
      cotangent = rng.standard_normal(pooled_torch.shape).astype(np.float32)
      (pooled_torch * torch.from_numpy(cotangent)).sum().backward()

      def weighted_sum(x_nhwc):
        pooled = max_pool_ceil(x_nhwc, window, stride, padding)
        return jnp.sum(pooled * cotangent.transpose(0, 2, 3, 1)), pooled

      grad, pooled = jax.jit(jax.grad(weighted_sum, has_aux=True))(x.transpose(0, 2, 3, 1))
      np.testing.assert_array_equal(
          np.asarray(pooled).transpose(0, 3, 1, 2), pooled_torch.detach().numpy()
      )
      np.testing.assert_allclose(
          np.asarray(grad).transpose(0, 3, 1, 2), x_torch.grad.numpy(), atol=1e-6
      )


def test_max_pool_ceil_gradient_with_ties_matches_torch():
  """After ReLU many windows hold equal maxima; torch sends the gradient to the first one."""
  torch = pytest.importorskip("torch")
  x = np.maximum(np.random.default_rng(1).integers(-3, 3, (2, 4, 9, 10)), 0).astype(np.float32)
  for window, stride, padding in [(3, 2, 0), (3, 1, 1), (2, 2, 0)]:
    x_torch = torch.from_numpy(x).requires_grad_(True)
    pooled = torch.nn.functional.max_pool2d(x_torch, window, stride, padding, ceil_mode=True)
    cotangent = np.arange(pooled.numel(), dtype=np.float32).reshape(pooled.shape)
    (pooled * torch.from_numpy(cotangent)).sum().backward()
    grad = jax.grad(
        lambda v: jnp.sum(
            max_pool_ceil(v, window, stride, padding) * cotangent.transpose(0, 2, 3, 1)
        )
    )(jnp.asarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_array_equal(np.asarray(grad).transpose(0, 3, 1, 2), x_torch.grad.numpy())


def test_max_pool_ceil_rejects_too_small_input():
  with pytest.raises(ValueError, match="does not fit"):
    max_pool_ceil(jnp.zeros((1, 1, 1, 1)), window=3, stride=2)


@pytest.mark.parametrize(
    "kernel_shape,stride,padding",
    # 1x1 (a dot), 3x3 with symmetric and asymmetric padding (GEMM kernel gradient), strided
    # 7x7 (passed through to lax).
    [
        ((1, 1, 5, 7), 1, ((0, 0), (0, 0))),
        ((3, 3, 5, 7), 1, ((1, 1), (1, 1))),
        ((3, 3, 5, 7), 1, ((0, 2), (1, 0))),
        ((7, 7, 5, 4), 2, ((3, 3), (3, 3))),
    ],
)
def test_conv_gemm_grads_matches_lax_conv_and_its_gradients(kernel_shape, stride, padding):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 11, 10, 5))
  kernel = jax.random.normal(jax.random.PRNGKey(1), kernel_shape)
  numbers = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, ("NHWC", "HWIO", "NHWC"))

  def loss(conv, x, kernel):
    out = conv(x, kernel, (stride, stride), padding, dimension_numbers=numbers)
    return jnp.sum(jnp.sin(out)), out

  (_, expected_out), expected_grads = jax.value_and_grad(
      lambda *a: loss(jax.lax.conv_general_dilated, *a), argnums=(0, 1), has_aux=True
  )(x, kernel)
  (_, out), grads = jax.value_and_grad(
      lambda *a: loss(conv_gemm_grads, *a), argnums=(0, 1), has_aux=True
  )(x, kernel)
  np.testing.assert_allclose(out, expected_out, atol=1e-4, rtol=1e-5)
  for got, expected in zip(grads, expected_grads):
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-5)


def test_unknown_conv_impl_is_refused():
  with pytest.raises(ValueError, match="conv_impl must be one of"):
    GoogLeNetBackbone(conv_impl="cudnn").init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))


def _count(tree):
  return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


def test_parameter_count_matches_torchvision_pin():
  shapes = jax.eval_shape(
      GoogLeNet().init, jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3), jnp.float32)
  )
  assert _count(shapes["params"]) == TORCHVISION_GOOGLENET_PARAMS
  assert _count(shapes["params"]["features"]) == TORCHVISION_GOOGLENET_PARAMS - FC_PARAMS
  # 57 BatchNorms (3 stem convs + 9 blocks x 6 convs), mean and var each.
  assert len(jax.tree_util.tree_leaves(shapes["batch_stats"])) == 2 * 57


@pytest.mark.parametrize("height,width,expected_hw", [(224, 224, (7, 7)), (111, 96, (4, 3))])
def test_backbone_feature_map_shape(height, width, expected_hw):
  backbone = GoogLeNetBackbone()
  images = jnp.zeros((2, height, width, 3), jnp.float32)
  variables = jax.eval_shape(backbone.init, jax.random.PRNGKey(0), images)
  out = jax.eval_shape(lambda v, x: backbone.apply(v, x), variables, images)
  assert out.shape == (2, *expected_hw, 1024)


def test_backbone_rejects_channels_first_input():
  with pytest.raises(ValueError, match="NHWC"):
    GoogLeNetBackbone().init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 32, 32)))


def random_variables(module, images, seed):
  """Variables for module filled with NumPy random numbers (compiling init is slow on CPU).

  He-scaled kernels, BatchNorm affine near identity, small running means, variances in
  [0.5, 2]: activations stay alive through the 57 conv-BN-ReLU layers and eval-mode
  normalisation is not the identity.
  """
  rng = np.random.default_rng(seed)
  shapes = flatten_variables(jax.eval_shape(init_jit, module, images))
  filled = {}
  for name, leaf in shapes.items():
    if name.endswith("/kernel"):
      fan_in = math.prod(leaf.shape[:-1])
      value = rng.standard_normal(leaf.shape) * math.sqrt(2.0 / fan_in)
    elif name.endswith("/scale"):
      value = rng.uniform(0.5, 1.5, leaf.shape)
    elif name.endswith("/bias") or name.endswith("/mean"):
      value = 0.1 * rng.standard_normal(leaf.shape)
    elif name.endswith("/var"):
      value = rng.uniform(0.5, 2.0, leaf.shape)
    else:
      raise AssertionError(f"unexpected variable {name}")
    filled[name] = jnp.asarray(value, jnp.float32)
  return unflatten_variables(filled)


@pytest.fixture(scope="module")
def small_backbone_variables():
  return random_variables(GoogLeNetBackbone(), jnp.zeros((1, 32, 32, 3), jnp.float32), seed=2)


def test_normalize_unit_images_semantics():
  """ImageNet mean/std; with transform_input the whole map is (x - 0.5) / 0.5."""
  images = jax.random.uniform(jax.random.PRNGKey(3), (2, 5, 4, 3))
  mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
  np.testing.assert_allclose(
      normalize_unit_images(images, transform_input=False), (images - mean) / std, atol=1e-6
  )
  np.testing.assert_allclose(
      normalize_unit_images(images, transform_input=True), 2 * images - 1, atol=1e-6
  )


def test_backbone_normalises_its_input(small_backbone_variables):
  images = jax.random.uniform(jax.random.PRNGKey(3), (2, 32, 32, 3))
  raw = GoogLeNetBackbone(normalize_input=False, transform_input=False)
  expected = apply_eval(raw, small_backbone_variables, 2 * images - 1)
  got = apply_eval(GoogLeNetBackbone(transform_input=True), small_backbone_variables, images)
  assert np.abs(np.asarray(expected)).max() > 1e-2  # activations survived the random weights
  np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
  unnormalised = apply_eval(raw, small_backbone_variables, images)
  assert np.abs(np.asarray(unnormalised) - np.asarray(expected)).max() > 1e-2


def test_classifier_features_are_the_backbone(small_backbone_variables):
  """GoogLeNet.features with torchvision-convention input == backbone with [0,1] input."""
  images = jax.random.uniform(jax.random.PRNGKey(4), (2, 32, 32, 3))
  normalized = (images - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
  classifier = GoogLeNet(num_classes=5, transform_input=True)
  fc = jax.eval_shape(init_jit, classifier, normalized)["params"]["fc"]
  fc = {"kernel": jax.random.normal(jax.random.PRNGKey(5), fc["kernel"].shape), "bias": jnp.ones(5)}
  classifier_variables = {
      "params": {"features": small_backbone_variables["params"], "fc": fc},
      "batch_stats": {"features": small_backbone_variables["batch_stats"]},
  }
  logits = apply_eval(classifier, classifier_variables, normalized)
  feature_map = apply_eval(GoogLeNetBackbone(), small_backbone_variables, images)
  expected = np.asarray(feature_map).mean(axis=(1, 2)) @ np.asarray(fc["kernel"]) + 1.0
  np.testing.assert_allclose(logits, expected, atol=1e-3, rtol=1e-4)


def test_train_mode_uses_batch_statistics_and_updates_them(small_backbone_variables):
  images = jax.random.uniform(jax.random.PRNGKey(5), (4, 32, 32, 3))
  backbone = GoogLeNetBackbone()
  eval_out = apply_eval(backbone, small_backbone_variables, images)
  train_out, updates = apply_train(backbone, small_backbone_variables, images)
  assert np.abs(np.asarray(train_out) - np.asarray(eval_out)).max() > 1e-3
  # conv1's new running mean = 0.9 * old + 0.1 * batch mean of conv1's pre-BN activations.
  x = 2 * images - 1  # the default backbone's input normalisation (transform_input=True)
  conv1 = jax.lax.conv_general_dilated(
      x,
      small_backbone_variables["params"]["conv1"]["conv"]["kernel"],
      (2, 2),
      ((3, 3), (3, 3)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )
  old = small_backbone_variables["batch_stats"]["conv1"]["bn"]["mean"]
  np.testing.assert_allclose(
      updates["batch_stats"]["conv1"]["bn"]["mean"],
      0.9 * old + 0.1 * conv1.mean(axis=(0, 1, 2)),
      atol=1e-4,
      rtol=1e-4,
  )


def test_bfloat16_compute_keeps_float32_params(small_backbone_variables):
  images = jax.random.uniform(jax.random.PRNGKey(6), (2, 32, 32, 3))
  low = GoogLeNetBackbone(dtype=jnp.bfloat16)
  variables = jax.eval_shape(init_jit, low, images)
  assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(variables)} == {jnp.dtype(jnp.float32)}
  out_low = apply_eval(low, small_backbone_variables, images)
  out_high = apply_eval(GoogLeNetBackbone(), small_backbone_variables, images)
  assert out_low.dtype == jnp.bfloat16
  relative = np.linalg.norm(np.float32(out_low) - out_high) / np.linalg.norm(out_high)
  assert relative < 0.05


# --- pretrained.load on a toy IAH-like model --------------------------------------------------


class ToyHashModel(nn.Module):
  """A GoogLeNet backbone plus a small head, shaped like the IAH model's variables."""

  @nn.compact
  def __call__(self, images, train: bool = False):
    feature_map = GoogLeNetBackbone(name="backbone")(images, train)
    codes = nn.Dense(8, name="hash_head")(feature_map.mean(axis=(1, 2)))
    return feature_map, codes


TOY_IMAGES = jnp.zeros((1, 32, 32, 3), jnp.float32)


@pytest.fixture(scope="module")
def toy_init():
  return random_variables(ToyHashModel(), TOY_IMAGES, seed=10)


@pytest.fixture(scope="module")
def converted_file(tmp_path_factory, small_backbone_variables):
  """A converted-classifier file (what the torchvision converter writes), made torch-free."""
  fc = {"kernel": np.full((1024, 7), 0.5, np.float32), "bias": np.arange(7, dtype=np.float32)}
  variables = {
      "params": {"features": small_backbone_variables["params"], "fc": fc},
      "batch_stats": {"features": small_backbone_variables["batch_stats"]},
  }
  path = tmp_path_factory.mktemp("pretrained") / "googlenet.npz"
  save_converted(variables, str(path))
  return path, variables


def _write_modified(tmp_path, variables, edit):
  flat = {name: np.asarray(leaf) for name, leaf in flatten_variables(variables).items()}
  edit(flat)
  path = tmp_path / "modified.npz"
  save_converted(unflatten_variables(flat), str(path))
  return str(path)


def test_load_replaces_backbone_and_keeps_head(toy_init, converted_file):
  path, source = converted_file
  loaded = pretrained.load(toy_init, str(path))
  for collection in ("params", "batch_stats"):
    got = flatten_variables(loaded[collection]["backbone"])
    want = flatten_variables(source[collection]["features"])
    assert got.keys() == want.keys()
    for name in want:
      np.testing.assert_array_equal(got[name], want[name])
  for name, leaf in flatten_variables(toy_init["params"]["hash_head"]).items():
    np.testing.assert_array_equal(flatten_variables(loaded["params"]["hash_head"])[name], leaf)
  # The input variables are not modified in place.
  assert not np.array_equal(
      toy_init["params"]["backbone"]["conv1"]["conv"]["kernel"],
      loaded["params"]["backbone"]["conv1"]["conv"]["kernel"],
  )
  # The loaded backbone computes what the source weights compute.
  images = jax.random.uniform(jax.random.PRNGKey(12), (2, 32, 32, 3))
  feature_map, _ = apply_eval(ToyHashModel(), loaded, images)
  expected = apply_eval(
      GoogLeNetBackbone(),
      {"params": source["params"]["features"], "batch_stats": source["batch_stats"]["features"]},
      images,
  )
  np.testing.assert_allclose(feature_map, expected, atol=1e-5, rtol=1e-5)


def test_load_dont_load_keeps_initial_values(toy_init, converted_file):
  path, source = converted_file
  loaded = pretrained.load(toy_init, str(path), dont_load=(r"/inception5b/",))
  np.testing.assert_array_equal(
      loaded["params"]["backbone"]["inception5b"]["branch1"]["conv"]["kernel"],
      toy_init["params"]["backbone"]["inception5b"]["branch1"]["conv"]["kernel"],
  )
  np.testing.assert_array_equal(
      loaded["batch_stats"]["backbone"]["inception5b"]["branch1"]["bn"]["var"],
      toy_init["batch_stats"]["backbone"]["inception5b"]["branch1"]["bn"]["var"],
  )
  np.testing.assert_array_equal(
      loaded["params"]["backbone"]["inception5a"]["branch1"]["conv"]["kernel"],
      source["params"]["features"]["inception5a"]["branch1"]["conv"]["kernel"],
  )


def test_load_refuses_missing_weight(toy_init, converted_file, tmp_path):
  name = "params/features/inception4c/branch3_conv/conv/kernel"
  path = _write_modified(tmp_path, converted_file[1], lambda flat: flat.pop(name))
  with pytest.raises(ValueError, match="missing") as error:
    pretrained.load(toy_init, path)
  assert "params/backbone/inception4c/branch3_conv/conv/kernel" in str(error.value)
  # ... unless the caller says that weight is not to be loaded.
  pretrained.load(toy_init, path, dont_load=("inception4c/branch3_conv/conv",))


def test_load_refuses_unexpected_weight(toy_init, converted_file, tmp_path):
  def add(flat):
    flat["batch_stats/features/conv9/bn/mean"] = np.zeros(3, np.float32)

  path = _write_modified(tmp_path, converted_file[1], add)
  with pytest.raises(ValueError, match="unexpected") as error:
    pretrained.load(toy_init, path)
  assert "batch_stats/backbone/conv9/bn/mean" in str(error.value)


def test_load_refuses_shape_mismatch(toy_init, converted_file, tmp_path):
  name = "params/features/conv2/conv/kernel"

  def shrink(flat):
    flat[name] = flat[name][..., :32]

  path = _write_modified(tmp_path, converted_file[1], shrink)
  with pytest.raises(ValueError, match="shape mismatches") as error:
    pretrained.load(toy_init, path)
  assert "params/backbone/conv2/conv/kernel: file (1, 1, 64, 32), model (1, 1, 64, 64)" in str(
      error.value
  )


def test_load_refuses_wrong_prefix(toy_init, converted_file):
  with pytest.raises(ValueError, match="no params/encoder subtree"):
    pretrained.load(toy_init, str(converted_file[0]), prefix="encoder")
