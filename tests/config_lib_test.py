"""The config's own description: every leaf of the base config has a rule (type and valid range, or a registry),
every config file passes them, and the command line is checked against them before absl parses it."""

import pathlib

import ml_collections
import pytest

from lmx import config_lib
from lmx.config_lib import ConfigError
from lmx.config_rules import BOOLEAN, TEXT, AxisRules, integer, names, one_of, real, registered

REPO = pathlib.Path(__file__).resolve().parent.parent
TINY = f"--config={REPO}/configs/t5_tiny.py"


def test_every_leaf_has_a_rule_and_every_rule_a_leaf():
    leaves = set(config_lib.leaves(config_lib.base_config()))
    missing = sorted(leaves - set(config_lib.FIELDS))
    assert not missing, f"add a line to lmx.config_lib.FIELDS for each of {missing}"
    stale = sorted(set(config_lib.FIELDS) - leaves)
    assert not stale, f"lmx.config_lib.FIELDS names fields base_config() no longer has: {stale}"


def test_every_rule_resolves_and_every_config_passes():
    for rule in config_lib.FIELDS.values():
        assert rule.describe()  # registries import and list their names
    config_lib.check_fields(config_lib.base_config())
    for path in sorted((REPO / "configs").glob("*.py")):
        config_lib.check_fields(config_lib.load_config_file(str(path)))


@pytest.mark.parametrize(
    "rule, good, bad",
    [
        (integer(">= 1"), [1, 7], [0, -4, 1.5, True, "3"]),
        (integer(">= 0"), [0, 3], [-1]),
        (integer(">= 1", also=-1), [-1, 1, 8], [0, -2]),
        (real("> 0"), [1e-9, 3, 0.5], [0, 0.0, -1.0, float("nan"), "abc", False]),
        (real("[0, 1)"), [0, 0.0, 0.999], [1.0, 1.5, -0.1]),
        (real("(0, 1]"), [1.0, 0.5], [0.0, 1.01]),
        (real("(0, 1)"), [0.5], [0.0, 1.0]),
        (real(">= 1"), [1, 3.0], [0.99]),
        (BOOLEAN, [True, False], [1, "true", None]),
        (TEXT, ["", "a/*.txt"], [None, 3]),
        (one_of("stop", "skip"), ["stop", "skip"], ["halt", 1]),
        (registered("lmx.optim:OPTIMIZERS"), ["adamw", "adafactor"], ["sgd"]),
        (names("lmx.models.layers:ACTIVATIONS"), [("gelu", "linear"), ("relu",)], [(), ("gelu", "bogus"), "gelu"]),
        (config_lib.FIELDS["optim.weight_decay_exclude"], [(), (r".*norm.*",)], [("[unclosed",), "x"]),
        (
            AxisRules("lmx.sharding:MESH_AXES"),
            [(("batch", ("data", "fsdp")), ("kv", None), ("embed", "fsdp"))],
            [(("batch", "rows"),), (("batch",),), "batch"],
        ),
    ],
)
def test_rules_accept_their_range_and_refuse_the_rest(rule, good, bad):
    for value in good:
        assert rule.problem(value) is None, (rule, value)
    for value in bad:
        assert rule.problem(value), (rule, value)


def test_check_fields_names_the_key_the_value_and_the_range():
    config = config_lib.base_config()
    config.model.dropout_rate = 1.5
    with pytest.raises(
        ConfigError, match=r"^config\.model\.dropout_rate=1\.5 is out of range; it must be a float in \[0, 1\)$"
    ):
        config_lib.check_fields(config)
    config = config_lib.base_config()
    config.optim.name = "sgd"
    with pytest.raises(
        ConfigError, match=r"^config\.optim\.name='sgd' is unknown; choose one of \['adafactor', 'adamw'\]$"
    ):
        config_lib.check_fields(config)


def test_overrides_are_parsed_as_absl_will_then_checked():
    config = config_lib.check_overrides(
        [TINY, "--config.train.steps", "7", "--noconfig.train.progress_bar", "--config.optim.learning_rate=1e-3"]
    )
    assert (config.train.steps, config.train.progress_bar, config.optim.learning_rate) == (7, False, 1e-3)
    assert config_lib.check_overrides(["--workdir=/tmp/x"]) is None  # no --config: absl reports it

    cases = [
        (["--config.optim.learning_rate=abc"], r"^config\.optim\.learning_rate='abc' is not a float > 0 \(from "),
        (["--config.train.batch_size=8.5"], r"^config\.train\.batch_size='8\.5' is not an int >= 1"),
        (["--config.train.progress_bar=maybe"], r"^config\.train\.progress_bar='maybe' is not true or false"),
        (["--config.train.stepz=3"], r"^unknown config key config\.train\.stepz .*'steps'"),
        (
            ["--config.optim.learning_rate=-1"],
            r"^config\.optim\.learning_rate=-1\.0 is out of range; it must be a float > 0$",
        ),
    ]
    for args, match in cases:
        with pytest.raises(ConfigError, match=match):
            config_lib.check_overrides([TINY, *args])


def test_config_files_that_cannot_load_are_one_line(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(arg=None)\n    return None\n")
    with pytest.raises(ConfigError, match=rf"^--config={broken}: {broken} line 1 is not valid Python \(expected ':'\)"):
        config_lib.load_config_file(str(broken))
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ConfigError, match=r"defines no get_config"):
        config_lib.load_config_file(str(empty))
    raising = tmp_path / "raising.py"
    raising.write_text("def get_config(arg=None):\n    return {}['missing']\n")
    with pytest.raises(ConfigError, match=r"get_config\(\) raised KeyError: 'missing'"):
        config_lib.load_config_file(str(raising))
    with pytest.raises(ConfigError, match=r"t5_small\.py:nonsense: configs/t5_small\.py takes no argument or 'debug'"):
        config_lib.load_config_file(f"{REPO}/configs/t5_small.py:nonsense")
    with pytest.raises(ConfigError, match=r"no such file"):
        config_lib.load_config_file(str(tmp_path / "missing.py"))
    assert isinstance(config_lib.load_config_file(f"{REPO}/configs/t5_small.py:debug"), ml_collections.ConfigDict)
