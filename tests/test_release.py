"""Shipping: `omniforge release`, then `dvc artifacts get` from anywhere, verified and loaded."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import thinker_states
from project import copy_project, run

from omniforge.release import withdraw_unpublished
from omniforge.runtime import GenerationConfig, load_talker

pytestmark = pytest.mark.slow
OMNIFORGE = str(Path(sys.executable).parent / "omniforge")


@pytest.fixture(scope="module")
def released(tiny_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("release")
    project = copy_project(tiny_project, root / "project")
    run(["dvc", "remote", "modify", "local", "url", str(root / "remote")], project)
    run(["git", "commit", "-qam", "its own remote"], project)
    manifest = json.loads((project / "models/published/manifest.json").read_text())
    published = {f"{a['component']}-{a['variant']}" for a in manifest["artifacts"]}
    assert {"talker_fused-int4", "talker_fused-hybrid"} <= published, manifest["rejected"]
    result = run([OMNIFORGE, "release"], project)
    assert "talker_fused-int4: v0.1.0" in result.stdout.splitlines()
    return project


def test_release_declares_artifacts_and_tags_versions(released: Path) -> None:
    artifacts = yaml.safe_load((released / "dvc.yaml").read_text())["artifacts"]
    manifest = json.loads((released / "models/published/manifest.json").read_text())
    names = {f"{a['component']}-{a['variant']}" for a in manifest["artifacts"]}
    assert names <= set(artifacts)
    assert artifacts["talker_fused-int4"]["path"] == "models/published/talker_fused/int4"
    assert len(artifacts["talker_fused-int4"]["meta"]["sha256"]) == 64
    tags = run(["git", "tag", "--list"], released).stdout.split()
    assert "talker_fused-int4@v0.1.0" in tags
    assert run(["git", "status", "--porcelain", "dvc.yaml"], released).stdout == ""


def test_an_unchanged_artifact_gets_no_new_version(released: Path) -> None:
    result = run([OMNIFORGE, "release"], released)
    assert "talker_fused-int4: unchanged" in result.stdout


def test_an_artifact_fetched_by_name_verifies_and_loads(released: Path, tmp_path: Path) -> None:
    run(["dvc", "artifacts", "get", str(released), "talker_fused-int4"], tmp_path)
    fetched = tmp_path / "int4"
    assert {p.name for p in fetched.iterdir()} == {
        "model.onnx",
        "model.onnx.data",
        "manifest.json",
        "README.md",
    }
    verified = run([OMNIFORGE, "verify", str(fetched)], tmp_path)
    assert "talker_fused/int4" in verified.stdout
    talker = load_talker(fetched, threads=1)
    prompt, reply = thinker_states(batch=1, prompt=6, reply=3)
    codes = talker.generate(prompt, reply, GenerationConfig(max_new_tokens=5)).codes
    assert codes.shape == (1, 5) and np.all(codes >= 0)
    # A byte changed after the fetch: the loader refuses it.
    data = fetched / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    assert run([OMNIFORGE, "verify", str(fetched)], tmp_path, check=False).returncode == 1


def test_a_hybrid_pair_is_fetched_whole(released: Path, tmp_path: Path) -> None:
    run(["dvc", "artifacts", "get", str(released), "talker_fused-hybrid"], tmp_path)
    pair = tmp_path / "hybrid"
    assert (pair / "prefill" / "model.onnx").is_file() and (
        pair / "decode" / "model.onnx"
    ).is_file()
    talker = load_talker(pair, threads=1)
    assert talker.prefill_session is not None


def test_a_version_is_fetched_by_its_number(released: Path, tmp_path: Path) -> None:
    get = ["dvc", "artifacts", "get", str(released), "talker_fused-int4", "--rev", "v0.1.0"]
    run([*get, "-o", "pinned"], tmp_path)
    assert "talker_fused/int4" in run([OMNIFORGE, "verify", "pinned"], tmp_path).stdout


def test_an_artifact_no_longer_published_is_withdrawn_with_comments_kept(tmp_path: Path) -> None:
    dvc_yaml = tmp_path / "dvc.yaml"
    dvc_yaml.write_text(
        "# the pipeline\nstages: {}\nartifacts:\n"
        "  talker_kv-int4:  # refused since\n    path: models/published/talker_kv/int4\n"
        "  talker_kv-int8:\n    path: models/published/talker_kv/int8\n"
    )
    assert withdraw_unpublished(dvc_yaml, {"talker_kv-int8"}) == ["talker_kv-int4"]
    text = dvc_yaml.read_text()
    assert text.startswith("# the pipeline")
    assert set(yaml.safe_load(text)["artifacts"]) == {"talker_kv-int8"}
    assert withdraw_unpublished(dvc_yaml, {"talker_kv-int8"}) == []
