"""End to end: `dvc repro` on the tiny preset in a temporary git repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from omniforge.onnx_io import sha256_file
from omniforge.registry import load_manifest, verify_all

REPO = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["dvc.yaml", "params.yaml", ".gitignore", "stages", "src", ".dvc/config"]

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # The stage commands call `python`: make it this interpreter, with its dvc.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed:\n{result.stdout}\n{result.stderr}")
    return result


def _tiny_params(path: Path) -> None:
    params = yaml.safe_load(path.read_text())
    params["model"]["preset"] = "tiny"
    params["benchmark"].update(warmup=1, iterations=3, load_repeats=1)
    params["benchmark"]["lengths"] = {"talker": [8, 16], "projection": [20, 40]}
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(
                source, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    _tiny_params(root / "params.yaml")
    _run(["git", "init", "-q"], root)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], root)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"], root)
    _run(["dvc", "repro"], root)
    return root


def test_repro_publishes_artifacts_matching_the_manifest(project: Path) -> None:
    published = project / "models" / "published"
    manifest = load_manifest(published)
    built = {(a["component"], a["variant"]) for a in manifest["artifacts"]}
    assert {("talker", "fp32"), ("projection", "fp32")} <= built
    for artifact in manifest["artifacts"]:
        for record in artifact["files"]:
            path = published / artifact["path"] / record["name"]
            assert sha256_file(path) == record["sha256"]
            assert path.stat().st_size == record["bytes"]
        assert artifact["metrics"]["benchmark"]["size"]["total_bytes"] == sum(
            f["bytes"] for f in artifact["files"]
        )
    assert all(a["source"]["preset"] == "tiny" for a in manifest["artifacts"])
    assert verify_all(published)
    assert manifest["params"]["model"]["preset"] == "tiny"
    for key in ("torch", "fp32", "int8", "int4"):
        assert key in (project / "metrics" / "benchmark" / "talker.json").read_text()


def test_second_repro_is_a_no_op(project: Path) -> None:
    result = _run(["dvc", "repro"], project)
    assert "Running stage" not in result.stdout
    assert "up to date" in result.stdout


def test_typo_in_params_fails_naming_the_key_and_touches_nothing(project: Path) -> None:
    params_file = project / "params.yaml"
    good = params_file.read_text()
    manifest = project / "models" / "published" / "manifest.json"
    int4 = project / "models" / "variants" / "talker-int4" / "model.onnx.data"
    before = (sha256_file(manifest), sha256_file(int4))
    params = yaml.safe_load(good)
    params["quantize"]["int4"]["blok_size"] = params["quantize"]["int4"].pop("block_size")
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        result = _run(["dvc", "repro"], project, check=False)
        assert result.returncode != 0
        assert "quantize.int4.blok_size: unknown key" in result.stdout + result.stderr
        assert (sha256_file(manifest), sha256_file(int4)) == before
    finally:
        params_file.write_text(good)


def test_changing_a_quantize_param_reruns_only_what_it_affects(project: Path) -> None:
    _run(["git", "add", "-A"], project)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline"], project)
    result = _run(["dvc", "exp", "run", "-S", "quantize.int4.block_size=16"], project)
    ran = {
        line.split("'")[1]
        for line in result.stdout.splitlines()
        if line.startswith("Running stage")
    }
    assert "quantize@talker-int4" in ran
    assert not any(
        stage.startswith(("export", "simplify", "quantize@talker-int8")) for stage in ran
    )
    diff = _run(["dvc", "metrics", "diff"], project).stdout
    assert "int4" in diff
