"""Bad input to `python -m lmx.train`, in-process through the functions the CLI runs: `train.run(argv)` for the
command line (it stops in config_lib.check_overrides, before absl parses flags) and `train.run_cli(config, workdir)`
for what main() does once flags are parsed. Each case: exit status 2, exactly one line on stderr naming the value
and the fix, and the workdir untouched. (Real CLI processes: tests/cli_test.py.)"""

import pathlib

import pytest
from lmx_cli import FAST

from lmx import config_lib, train

REPO = pathlib.Path(__file__).resolve().parent.parent


def _run_argv(args, workdir, capsys):
    argv = ["lmx.train", *args, f"--workdir={workdir}"]
    with pytest.raises(SystemExit) as exit_info:
        train.run(argv)
    lines = capsys.readouterr().err.splitlines()
    return exit_info.value.code, lines


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["--config.optim.learning_rate=-1"],
            "config.optim.learning_rate=-1.0 is out of range; it must be a float > 0",
        ),
        (
            ["--config.optim.learning_rate=abc"],
            "config.optim.learning_rate='abc' is not a float > 0 (from --config.optim.learning_rate=abc)",
        ),
        (["--config.train.batch_size=0"], "config.train.batch_size=0 is out of range; it must be an int >= 1"),
        (["--config.train.batch_size=-4"], "config.train.batch_size=-4 is out of range; it must be an int >= 1"),
        (
            ["--config.model.dropout_rate=1.5"],
            "config.model.dropout_rate=1.5 is out of range; it must be a float in [0, 1)",
        ),
        (["--config.model.num_heads=0"], "config.model.num_heads=0 is out of range; it must be an int >= 1"),
        (
            ["--config.train.stepz=3"],
            "unknown config key config.train.stepz (in --config.train.stepz=3); valid keys of config.train: [",
        ),
    ],
)
def test_bad_values_on_the_command_line(tmp_path, capsys, args, line):
    status, lines = _run_argv([f"--config={REPO}/configs/t5_tiny.py", *args], tmp_path / "w", capsys)
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith(f"lmx.train: error: {line}"), lines
    assert not (tmp_path / "w").exists()


def test_config_files_that_cannot_load(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("from lmx import config_lib\n\ndef get_config(arg=None)\n    return config_lib.base_config()\n")
    status, lines = _run_argv([f"--config={broken}"], tmp_path / "w", capsys)
    assert status == 2
    assert lines == [
        f"lmx.train: error: --config={broken}: {broken} line 3 is not valid Python (expected ':'); fix the file"
    ]

    spec = f"{REPO}/configs/t5_small.py:nonsense"
    status, lines = _run_argv([f"--config={spec}"], tmp_path / "w", capsys)
    assert status == 2
    assert lines == [
        f"lmx.train: error: --config={spec}: configs/t5_small.py takes no argument or 'debug', not 'nonsense'"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.py"]


def _tiny(*args):
    return config_lib.lock(config_lib.check_overrides([f"--config={REPO}/configs/t5_tiny.py", *FAST, *args]))


def test_workdirs_that_cannot_be_used(tmp_path, capsys):
    regular = tmp_path / "file"
    regular.write_text("a regular file")
    config = _tiny("--config.train.steps=2")
    fix = "pass another --workdir (it is created if missing)"

    assert train.run_cli(config, str(regular)) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"lmx.train: error: --workdir={regular} is a file, not a directory; {fix}, or fix {regular}"
    ]
    assert train.run_cli(config, str(regular / "w")) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"lmx.train: error: --workdir={regular}/w cannot be created: {regular} is a file; {fix}, or fix {regular}/w"
    ]
    assert regular.read_text() == "a regular file"
    # What only the first write can tell (root passes every permission check) is refused by the lock, the first
    # thing a run writes: tests/workdir_test.py.
