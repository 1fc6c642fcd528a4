"""The architecture in pyproject.toml ([tool.importlinter]) holds, and would catch a breach."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=f"{root / 'src'}{os.pathsep}{root}")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPO / "src", root / "src", ignore=ignore)
    shutil.copytree(REPO / "stages", root / "stages", ignore=ignore)
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def test_import_contracts_are_kept() -> None:
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_runtime_that_imported_torch_would_break_its_contract(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    session = root / "src" / "omniforge" / "runtime" / "session.py"
    session.write_text(session.read_text() + "\nimport torch  # a breach\n")
    result = _lint(root)
    assert result.returncode != 0
    assert "omniforge.runtime.session -> torch" in result.stdout


def test_a_component_that_imported_a_check_would_break_its_contract(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    talker = root / "src" / "omniforge" / "components" / "talker.py"
    talker.write_text(talker.read_text() + "\nimport omniforge.validate.parity  # a breach\n")
    result = _lint(root)
    assert result.returncode != 0
    assert "omniforge.components.talker -> omniforge.validate.parity" in result.stdout
