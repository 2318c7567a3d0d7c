"""torchvision GoogLeNet -> Flax conversion: parity with torchvision (eval and train mode),
strict refusal of wrong state_dicts, the torch-free file format and the command line.

Needs torch and torchvision (requirements-test.txt); skipped where they are absent. Nothing is
downloaded: the torch model has random weights and randomised BatchNorm statistics.
"""

import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from iah_jax.convert import torchvision_googlenet as convert  # noqa: E402
from iah_jax.models import pretrained  # noqa: E402
from iah_jax.models.googlenet import GoogLeNetBackbone  # noqa: E402

TORCHVISION_GOOGLENET_PARAMS = 6_624_904  # aux_logits=False, 1000 classes


def _randomise_batchnorm(model, generator):
  """Non-trivial BatchNorm: stats from data, then perturbed; random affine parameters."""
  batchnorms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  for bn in batchnorms:
    bn.momentum = None  # cumulative average: after one batch, running stats = batch stats
  model.train()
  with torch.no_grad():
    model(torch.randn(4, 3, 96, 96, generator=generator))
    for bn in batchnorms:
      channels = bn.num_features
      noise = torch.randn(channels, generator=generator)
      bn.running_mean += 0.2 * noise * bn.running_var.sqrt()
      bn.running_var *= torch.empty(channels).uniform_(0.5, 2.0, generator=generator)
      bn.weight.copy_(torch.empty(channels).uniform_(0.5, 1.5, generator=generator))
      bn.bias.copy_(0.2 * torch.randn(channels, generator=generator))
      bn.momentum = 0.1
    # init_weights=True draws fc with std 0.01; scale it so logits are O(1..10) and a
    # 1e-3 tolerance is a real test.
    model.fc.weight.mul_(30.0)
  model.eval()
  return model


@pytest.fixture(scope="module")
def torch_model():
  torch.manual_seed(0)
  model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
  return _randomise_batchnorm(model, torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def state_dict_path(torch_model, tmp_path_factory):
  path = tmp_path_factory.mktemp("googlenet") / "googlenet.pth"
  torch.save(torch_model.state_dict(), path)
  return str(path)


@pytest.fixture(scope="module")
def state_dict(torch_model):
  return {name: tensor.numpy().copy() for name, tensor in torch_model.state_dict().items()}


def _torch_logits(model, images_nchw, transform_input):
  model.transform_input = transform_input
  try:
    with torch.no_grad():
      return model(torch.from_numpy(images_nchw)).numpy()
  finally:
    model.transform_input = False


@pytest.mark.parametrize(
    "height,width,transform_input",
    # 224: the paper's size. 111 x 96: every stride-2 pool has a ceil-mode extra window along H,
    # three of four along W, and maxpool4 pools an odd 7 -> 4.
    [(224, 224, False), (111, 96, True)],
)
def test_logits_match_torchvision(torch_model, state_dict_path, height, width, transform_input):
  images = np.random.default_rng(height).standard_normal((2, 3, height, width)).astype(np.float32)
  expected = _torch_logits(torch_model, images, transform_input)
  assert expected.std() > 1.0, "logits too small for a meaningful 1e-3 comparison"
  got = convert.logits_from_state_dict(
      state_dict_path, images.transpose(0, 2, 3, 1), transform_input=transform_input
  )
  assert got.shape == (2, 1000)
  np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)


def test_train_mode_matches_torchvision(torch_model, state_dict):
  """Train mode: inception5b output from batch statistics, and the running-stat updates."""
  variables = convert.convert_state_dict(state_dict)
  images = np.random.default_rng(7).standard_normal((2, 3, 64, 64)).astype(np.float32)

  model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
  model.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()})
  model.train()
  captured, samples_per_bn = {}, {}
  model.inception5b.register_forward_hook(lambda m, i, out: captured.update(out=out.detach()))
  for name, module in model.named_modules():
    if isinstance(module, torch.nn.BatchNorm2d):

      def count(m, inputs, out, name=name):
        batch, _, height, width = inputs[0].shape
        samples_per_bn[name] = batch * height * width

      module.register_forward_hook(count)
  with torch.no_grad():
    model(torch.from_numpy(images))
  torch_after = {k: v.numpy() for k, v in model.state_dict().items()}

  backbone = GoogLeNetBackbone(normalize_input=False, transform_input=False)
  flax_out, updates = jax.jit(
      lambda v, x: backbone.apply(v, x, train=True, mutable=["batch_stats"])
  )(
      {
          "params": variables["params"]["features"],
          "batch_stats": variables["batch_stats"]["features"],
      },
      images.transpose(0, 2, 3, 1),
  )
  np.testing.assert_allclose(
      np.asarray(flax_out), captured["out"].numpy().transpose(0, 2, 3, 1), atol=1e-3, rtol=1e-3
  )

  # Express torch's updated stats and each BN's sample count n in the Flax layout.
  torch_stats = convert.convert_state_dict(torch_after)["batch_stats"]["features"]
  counts = {
      f"{name}.running_var": np.full(torch_after[f"{name}.running_var"].shape, n, np.float32)
      for name, n in samples_per_bn.items()
  }
  sample_counts = convert.convert_state_dict({**torch_after, **counts})["batch_stats"]["features"]
  old = pretrained.flatten_variables(variables["batch_stats"]["features"])
  new_flax = pretrained.flatten_variables(updates["batch_stats"])
  new_torch = pretrained.flatten_variables(torch_stats)
  n_of = pretrained.flatten_variables(sample_counts)
  assert len(new_flax) == len(new_torch) == 2 * 57
  for name in new_torch:
    if name.endswith("/mean"):
      np.testing.assert_allclose(new_flax[name], new_torch[name], atol=1e-4, rtol=1e-4)
    else:
      # Flax adds 0.1 * biased batch variance, torch 0.1 * unbiased (factor n / (n - 1)).
      n = n_of[name]
      flax_unbiased = 0.9 * old[name] + (new_flax[name] - 0.9 * old[name]) * n / (n - 1)
      np.testing.assert_allclose(flax_unbiased, new_torch[name], atol=1e-4, rtol=1e-3)


def test_parameter_count_pin(torch_model, state_dict):
  assert sum(p.numel() for p in torch_model.parameters()) == TORCHVISION_GOOGLENET_PARAMS
  params = convert.convert_state_dict(state_dict)["params"]
  assert (
      sum(leaf.size for leaf in jax.tree_util.tree_leaves(params)) == TORCHVISION_GOOGLENET_PARAMS
  )


def test_axis_rules(state_dict):
  params = convert.convert_state_dict(state_dict)["params"]
  conv = state_dict["inception4e.branch3.1.conv.weight"]  # OIHW (128, 32, 3, 3)
  kernel = params["features"]["inception4e"]["branch3_conv"]["conv"]["kernel"]  # HWIO
  assert kernel.shape == (3, 3, 32, 128)
  assert kernel[2, 0, 5, 17] == conv[17, 5, 2, 0]
  assert params["fc"]["kernel"][3, 11] == state_dict["fc.weight"][11, 3]


def test_aux_classifier_and_counters_are_ignored(state_dict):
  aux_model = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False)
  aux_model.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()}, strict=False)
  aux_state = {k: v.numpy() for k, v in aux_model.state_dict().items()}
  assert any(k.startswith("aux1.") for k in aux_state)
  with_aux = pretrained.flatten_variables(convert.convert_state_dict(aux_state))
  without = pretrained.flatten_variables(convert.convert_state_dict(state_dict))
  assert with_aux.keys() == without.keys()
  for name in without:
    np.testing.assert_array_equal(with_aux[name], without[name])
  # num_batches_tracked is not required either.
  convert.convert_state_dict({k: v for k, v in state_dict.items() if "num_batches" not in k})


def test_refuses_missing_keys(state_dict):
  broken = dict(state_dict)
  del broken["inception4c.branch3.1.conv.weight"]
  del broken["conv2.bn.running_var"]
  with pytest.raises(ValueError) as error:
    convert.convert_state_dict(broken)
  message = str(error.value)
  assert "missing Flax variables (no torch key provides them) (2)" in message
  assert "params/features/inception4c/branch3_conv/conv/kernel" in message
  assert "batch_stats/features/conv2/bn/var" in message
  assert "unexpected" not in message


def test_refuses_unexpected_keys(state_dict):
  broken = dict(state_dict)
  broken["head.extra.weight"] = np.zeros((3, 3), np.float32)
  broken["inception6a.branch1.conv.weight"] = np.zeros((8, 8, 1, 1), np.float32)
  with pytest.raises(ValueError) as error:
    convert.convert_state_dict(broken)
  message = str(error.value)
  assert "unexpected torch keys (2)" in message
  assert "head.extra.weight" in message
  assert "inception6a.branch1.conv.weight" in message
  assert "missing" not in message


def test_refuses_shape_mismatch(state_dict):
  broken = dict(state_dict)
  broken["conv3.conv.weight"] = broken["conv3.conv.weight"][:, :, :1, :1]
  with pytest.raises(ValueError, match="shape mismatches") as error:
    convert.convert_state_dict(broken)
  assert (
      "conv3.conv.weight -> params/features/conv3/conv/kernel: got (1, 1, 64, 192), "
      "expected (3, 3, 64, 192)" in str(error.value)
  )


def test_saved_file_round_trips_without_torch_or_pickle(state_dict, tmp_path, monkeypatch):
  variables = convert.convert_state_dict(state_dict)
  path = tmp_path / "converted"  # no .npz suffix: the file must keep the given name
  pretrained.save_converted(variables, str(path))
  monkeypatch.setitem(sys.modules, "torch", None)  # any torch import would now fail
  loaded = pretrained.load_converted(str(path))
  original, restored = pretrained.flatten_variables(variables), pretrained.flatten_variables(loaded)
  assert original.keys() == restored.keys()
  for name in original:
    assert restored[name].dtype == np.float32
    np.testing.assert_array_equal(restored[name], original[name])
  with np.load(path, allow_pickle=False) as archive:
    assert str(archive[pretrained.FORMAT_KEY]) == pretrained.FORMAT_VERSION


def test_load_converted_rejects_foreign_npz(tmp_path):
  path = tmp_path / "other.npz"
  np.savez(path, weights=np.zeros(3))
  with pytest.raises(ValueError, match="marker"):
    pretrained.load_converted(str(path))


def test_command_line(state_dict_path, state_dict, tmp_path, capsys):
  out = tmp_path / "googlenet.npz"
  convert.main(["--pth", state_dict_path, "--out", str(out)])
  printed = capsys.readouterr().out
  assert f"params: 173 arrays, {TORCHVISION_GOOGLENET_PARAMS:,} numbers" in printed
  assert "batch_stats: 114 arrays" in printed
  assert "num_classes: 1000" in printed
  expected = pretrained.flatten_variables(convert.convert_state_dict(state_dict))
  written = pretrained.flatten_variables(pretrained.load_converted(str(out)))
  for name in expected:
    np.testing.assert_array_equal(written[name], expected[name])


def test_command_line_refuses_a_foreign_state_dict(state_dict, tmp_path, capsys):
  broken = {k: torch.from_numpy(v) for k, v in state_dict.items() if k != "fc.bias"}
  path = tmp_path / "broken.pth"
  torch.save(broken, path)
  with pytest.raises(SystemExit) as exit_info:
    convert.main(["--pth", str(path), "--out", str(tmp_path / "out.npz")])
  assert exit_info.value.code == 1
  assert "params/fc/bias" in capsys.readouterr().err
  assert not (tmp_path / "out.npz").exists()
