"""No silent skips in CI: tests/conftest.py fails a test that lacks ../shared/data or a package when CI is set, and
skips it loudly otherwise. Checked by running pytest on a small test file next to a copy of the real conftest, in a
directory whose ../shared/data does not exist."""

import os
import pathlib
import shutil
import subprocess
import sys

TESTS = pathlib.Path(__file__).resolve().parent

NEEDS = """
def test_needs_data(shared_data):
    assert shared_data.is_dir()


def test_needs_a_package():
    from conftest import requires

    requires("a_package_that_is_not_installed")
"""


def _pytest(root: pathlib.Path, ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=300,
    )


def test_missing_data_and_packages_fail_under_ci_and_skip_loudly_elsewhere(tmp_path):
    root = tmp_path / "repo"
    (root / "tests").mkdir(parents=True)
    shutil.copy(TESTS / "conftest.py", root / "tests" / "conftest.py")
    (root / "tests" / "needs_test.py").write_text(NEEDS)
    assert not (tmp_path / "shared" / "data").exists()

    local = _pytest(root, None)
    assert local.returncode == 0, local.stdout[-3000:]
    assert "2 skipped" in local.stdout and "2 tests skipped for missing data or packages" in local.stdout
    assert "MISSING: " in local.stdout and "a_package_that_is_not_installed" in local.stdout

    ci = _pytest(root, "true")
    assert ci.returncode == 1, ci.stdout[-3000:]
    # The fixture's failure is reported as an error of the test that uses it, requires() as a failure.
    assert "1 failed, 1 error" in ci.stdout and "CI is set" in ci.stdout

    assert _pytest(root, "false").returncode == 0  # CI=false is not CI
