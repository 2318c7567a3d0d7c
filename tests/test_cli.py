"""Command-line mistakes end in one clear message (field, value, choices), exit code 2, no
traceback: flag parsing + config validation in-process for every case (iah_jax.cli.parse_flags
then config.validate_config, exactly what `python -m iah_jax.main` runs first), and a few real
subprocess runs of `iah_jax.main` and `iah_jax.compare` for the path end to end. All fail before
any data preparation or training."""

import os
import subprocess
import sys

from absl import flags
import ml_collections
from ml_collections import config_flags
import pytest

from iah_jax import cli
from iah_jax import config as config_lib
from iah_jax.errors import UserInputError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(*args: str, config_file: str = "configs/default.py") -> ml_collections.ConfigDict:
  """`args` parsed and validated as main.py does (a fresh flag registry each call)."""
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", lock_config=True, flag_values=flag_values)
  flags.DEFINE_string("workdir", None, "", flag_values=flag_values)
  config_path = config_file if os.path.isabs(config_file) else os.path.join(REPO, config_file)
  argv = ["main.py", f"--config={config_path}", "--workdir=/unused", *args]
  assert cli.parse_flags(argv, flag_values) == ["main.py"]
  return config_lib.validate_config(flag_values.config, check_inputs=True)


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
  """An image-list directory: a UTF-8 train list, a query list and a list that is not UTF-8."""
  root = tmp_path_factory.mktemp("lists")
  (root / "images").mkdir()
  (root / "train.txt").write_text("a.jpg 1 0\nb.jpg 0 1\n")
  (root / "test.txt").write_text("c.jpg 1 1\n")
  (root / "latin1.txt").write_bytes("a.jpg 1 0\ncaf\u00e9.jpg 0 1\n".encode("latin-1"))
  (root / "short.txt").write_text("a.jpg 1 0\nb.jpg 1\n")
  return root


# (args, config file, fragments the message must hold: field, value, choices / known keys)
CASES = {
    "unknown key": (
        ["--config.optimizer.lr=1"],
        "configs/default.py",
        ["config.optimizer.lr", "known keys of config.optimizer", "learning_rate", "momentum"],
    ),
    "unknown top-level key": (
        ["--config.bogus.x=1"],
        "configs/default.py",
        ["config.bogus", "known keys of config:", "semantic_bits"],
    ),
    "fractional bits": (
        ["--config.semantic_bits=(16.5,)", "--config.bits_per_category=(4,)"],
        "configs/default.py",
        ["config.semantic_bits = (16.5,)", "tuple of integers >= 1"],
    ),
    "bits not numbers": (
        ["--config.semantic_bits=abc"],
        "configs/default.py",
        ["config.semantic_bits = ('abc',)", "tuple of integers >= 1"],
    ),
    "int field given text": (
        ["--config.num_train_steps=abc"],
        "configs/default.py",
        ["config.num_train_steps = 'abc'", "must be an integer"],
    ),
    "ties": (
        ["--config.eval.ties=bogus"],
        "configs/default.py",
        ["config.eval.ties = 'bogus'", "'stable', 'random', 'expected'"],
    ),
    "checkpoint interval": (
        ["--config.checkpoint_every=0"],
        "configs/default.py",
        ["config.checkpoint_every = 0", ">= 1"],
    ),
    "log interval": (
        ["--config.log_every=-5"],
        "configs/default.py",
        ["config.log_every = -5", ">= 1"],
    ),
    "eval batch": (
        ["--config.eval.batch_size=0"],
        "configs/default.py",
        ["config.eval.batch_size = 0", ">= 1"],
    ),
    "method": (
        ["--config.method=iahh"],
        "configs/default.py",
        ["config.method = 'iahh'", "'iah', 'one_stage', 'dsrh', 'qadwh', 'category_baseline'"],
    ),
    "output bound": (
        ["--config.model.output_bound=relu"],
        "configs/default.py",
        ["config.model.output_bound = 'relu'", "'tanh', 'sigmoid'"],
    ),
    "dtype": (
        ["--config.model.dtype=float16"],
        "configs/default.py",
        ["config.model.dtype = 'float16'", "'float32', 'bfloat16'"],
    ),
    "backbone": (
        ["--config.model.backbone=resnet"],
        "configs/default.py",
        ["config.model.backbone = 'resnet'", "'small_cnn', 'googlenet'"],
    ),
    "dataset name": (
        ["--config.dataset.name=voc2020"],
        "configs/default.py",
        ["config.dataset.name = 'voc2020'", "'voc2007'", "'image_list'"],
    ),
    "split syntax": (
        ["--config.dataset.train_split=train[:90%"],
        "configs/default.py",
        ["config.dataset.train_split = 'train[:90%'", "TFDS split string"],
    ),
    "split name": (
        ["--config.dataset.query_split=queries"],
        "configs/default.py",
        ["config.dataset.query_split = 'queries'", "no split 'queries'", "train, test"],
    ),
    "proposal method": (
        ["--config.dataset.options.proposal_method=edge_boxes"],
        "configs/image_list.py",
        ["proposal_method", "edge_boxes", "selective_search", "generic", "whole_image"],
    ),
    "dataset option of another dataset (issue 12)": (
        ["--config.dataset.options.image_root=/images"],
        "configs/miml.py",
        ["config.dataset.options.image_root = '/images'", "dataset 'miml'", "known options"],
    ),
    "dataset option typo": (
        ["--config.dataset.options.num_propsals=10"],
        "configs/image_list.py",
        ["config.dataset.options.num_propsals", "known options", "num_proposals"],
    ),
    "dataset option type": (
        ["--config.dataset.options.num_proposals=many"],
        "configs/image_list.py",
        ["config.dataset.options.num_proposals = 'many'", "integer"],
    ),
    "dataset option value": (
        ["--config.dataset.options.unlabelled_policy=ignore"],
        "configs/image_list.py",
        ["unlabelled_policy", "'ignore'", "'skip', 'error', 'keep'"],
    ),
    "backbone option": (
        ["--config.model.backbone_options.width=(8,)"],
        "configs/default.py",
        ["config.model.backbone_options.width", "backbone 'small_cnn'", "convs_per_stage, widths"],
    ),
    "method option choice": (
        ["--config.method=one_stage", "--config.method_options.one_stage.loss=hinge"],
        "configs/default.py",
        ["one_stage", "loss", "'hinge'", "weighted", "plain"],
    ),
    "method option type": (
        ["--config.method_options.dsrh.margin=wide"],
        "configs/default.py",
        ["config.method_options.dsrh.margin = 'wide'", "must be a number"],
    ),
    "pretrained file missing": (
        ["--config.model.pretrained=/nonexistent/googlenet.npz"],
        "configs/default.py",
        ["config.model.pretrained = '/nonexistent/googlenet.npz'", "no such file"],
    ),
    "unknown flag": (["--workdirr=/x"], "configs/default.py", ["workdirr", "workdir"]),
    "missing config file": ([], "configs/nonexistent.py", ["configs/nonexistent.py"]),
    "config file argument": ([], "configs/image_list.py:resnet", ["small_cnn or googlenet"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_mistake_gives_one_message_naming_field_value_and_choices(case, lists):
  args, config_file, fragments = CASES[case]
  if config_file.startswith("configs/image_list.py") or config_file == "configs/miml.py":
    args = [f"--config.dataset.options.data_path={lists}", *args]
  with pytest.raises(UserInputError) as error:
    parse(*args, config_file=config_file)
  message = str(error.value)
  for fragment in fragments:
    assert fragment in message, (fragment, message)
  assert "Traceback" not in message


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["--config.dataset.options.train_list=latin1.txt"], ["latin1.txt line 2", "UTF-8"]),
        (["--config.dataset.options.train_list=short.txt"], ["short.txt line 2", "2 labels"]),
        (["--config.dataset.options.query_list=none.txt"], ["query_list", "none.txt not found"]),
        (
            ["--config.dataset.options.image_root=/nonexistent/images"],
            ["config.dataset.options.image_root = '/nonexistent/images'", "not found"],
        ),
    ],
)
def test_input_files_are_checked_before_any_work(lists, args, fragments):
  with pytest.raises(UserInputError) as error:
    parse(f"--config.dataset.options.data_path={lists}", *args, config_file="configs/image_list.py")
  for fragment in fragments:
    assert fragment in str(error.value), (fragment, str(error.value))


def test_every_dataset_and_backbone_option_is_settable_and_typed(lists):
  """Options the config file does not set are accepted by their schema's types; several
  problems are all reported."""
  config = parse(
      f"--config.dataset.options.data_path={lists}",
      "--config.dataset.options.image_root",  # the space-separated form
      str(lists / "images"),
      "--config.dataset.options.num_classes=2",
      "--config.dataset.options.class_names=(dog,cat)",
      "--noconfig.dataset.options.progress",
      "--config.dataset.options.image_max_side=128",
      "--config.model.backbone_options.widths=8,16",
      config_file="configs/image_list.py",
  )
  options = config.dataset.options
  assert options.image_root == str(lists / "images") and options.num_classes == 2
  assert options.class_names == ("dog", "cat") and options.progress is False
  assert options.image_max_side == 128 and options.num_proposals == 100  # the file's value
  assert tuple(config.model.backbone_options.widths) == (8, 16)
  # The synthetic scenes' options replace the fields of the named config.
  config = parse("--config.dataset.options.num_train=64")
  assert config.dataset.options.num_train == 64
  with pytest.raises(UserInputError) as error:
    parse("--config.eval.ties=bogus", "--config.log_every=0")
  assert str(error.value).count("\n") == 1  # two problems, two lines


def test_every_schema_field_has_a_check():
  config = config_lib.base_config()
  fields = {
      key
      for key in config_lib._keys(config)
      if not isinstance(config_lib._get(config, key), ml_collections.ConfigDict)
      and not key.startswith("method_options.")
  }
  assert fields == set(config_lib.FIELD_CHECKS)


def test_config_files_are_valid(lists):
  for name in ("default", "miml", "voc07", "voc12", "mirflickr", "image_list"):
    data_path = [] if name == "default" else [f"--config.dataset.options.data_path={lists}"]
    assert parse(*data_path, config_file=f"configs/{name}.py").dataset.name


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, "-m", module, *args],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
  )


def test_main_and_compare_end_to_end_exit_2_without_traceback(tmp_path, lists):
  """Real processes: a flag error raised inside ml_collections' parsing (main), an unknown
  dataset option (main), a config value error (compare: its --methods each validated), a data
  file error (main)."""
  bad_key = run_cli(
      "iah_jax.main",
      "--config=configs/default.py",
      f"--workdir={tmp_path}",
      "--config.optimizer.lr=1",
  )
  bad_ties = run_cli(
      "iah_jax.compare",
      "--config=configs/default.py",
      f"--workdir={tmp_path}",
      "--methods=one_stage,lsh",
      "--config.method_options.one_stage.loss=hinge",
  )
  bad_list = run_cli(
      "iah_jax.main",
      "--config=configs/image_list.py",
      f"--workdir={tmp_path}",
      f"--config.dataset.options.data_path={lists}",
      "--config.dataset.options.train_list=latin1.txt",
  )
  bad_option = run_cli(  # issue 12: a dataset option the dataset does not have
      "iah_jax.main",
      "--config=configs/miml.py",
      f"--workdir={tmp_path}",
      "--config.dataset.options.image_root=/images",
  )
  for run, fragments in (
      (bad_key, ["error: unknown config key config.optimizer.lr", "learning_rate"]),
      (bad_option, ["config.dataset.options.image_root = '/images'", "known options: "]),
      (bad_ties, ["error: ", "one_stage", "'hinge'", "plain"]),
      (bad_list, ["error: image list ", "latin1.txt line 2: not UTF-8"]),
  ):
    assert run.returncode == 2, run.stderr[-2000:]
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
    for fragment in fragments:
      assert fragment in run.stderr, (fragment, run.stderr[-2000:])
  assert not os.listdir(tmp_path)  # nothing was prepared or trained
