"""`omniforge verify`, `show`, `compare` and `clean` on a published set made in the test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omniforge.artifacts import artifact_bytes, artifact_files
from omniforge.cli import app
from omniforge.params import Gate
from omniforge.publish import Candidate, publish

runner = CliRunner()


def candidate(variant: str, directory: Path, cosine: float, p50_ms: float) -> Candidate:
    return Candidate(
        component="projection",
        variant=variant,
        graphs={"model": directory},
        graph_kind="full-sequence",
        parity={"cosine": cosine, "max_abs_error": 0.01},
        benchmark={
            "latency": {"frames=100": {"p50_ms": p50_ms}},
            "largest_case": "frames=100",
            "largest_case_p50_ms": p50_ms,
            "load_s": 0.01,
            "size": artifact_bytes(directory),
        },
        files=artifact_files(directory),
    )


@pytest.fixture(scope="module")
def published(tiny_variants: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "published"
    variants = tiny_variants["projection"]
    publish(
        [
            candidate("fp32", variants["fp32"], 1.0, 2.0),
            candidate("int8", variants["int8"], 0.9999, 1.0),
            candidate("int4", variants["int4"], 0.5, 0.8),
        ],
        {"fp32": Gate(), "int8": Gate(), "int4": Gate(min_cosine=0.9)},
        out,
        {"projection": {"kind": "synthetic", "preset": "tiny", "seed": 0}},
        {},
    )
    return out


def test_verify_a_published_set_and_one_artifact(published: Path) -> None:
    result = runner.invoke(app, ["verify", str(published)])
    assert result.exit_code == 0 and "2 artifact(s) verified" in result.stdout
    single = runner.invoke(app, ["verify", str(published / "projection" / "int8")])
    assert single.exit_code == 0 and "projection/int8" in single.stdout


def test_verify_fails_on_a_changed_byte(published: Path, tmp_path: Path) -> None:
    import shutil

    copy = shutil.copytree(published / "projection" / "fp32", tmp_path / "fp32")
    data = copy / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:-1] + b"\0")
    result = runner.invoke(app, ["verify", str(copy)])
    assert result.exit_code == 1 and "model.onnx.data" in result.stdout


def test_show_prints_headlines_and_refusals(published: Path) -> None:
    result = runner.invoke(app, ["show", str(published)])
    assert result.exit_code == 0
    assert "projection/fp32" in result.stdout and "projection/int8" in result.stdout
    assert "min_cosine" in result.stdout, "the refused int4 and the gate that refused it"


def test_compare_two_variants_with_ratios(published: Path) -> None:
    result = runner.invoke(
        app, ["compare", "projection/fp32", "projection/int8", "--directory", str(published)]
    )
    assert result.exit_code == 0
    assert "2.00×" in result.stdout  # latency 2.0 ms vs 1.0 ms
    missing = runner.invoke(
        app, ["compare", "projection/fp32", "projection/int4", "--directory", str(published)]
    )
    assert missing.exit_code == 1 and "not published" in missing.stdout


def test_clean_removes_temporaries_of_dead_runs(tmp_path: Path) -> None:
    stale = tmp_path / "models" / ".fp32.tmp-999999999-x"
    stale.mkdir(parents=True)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = runner.invoke(app, ["clean"])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0 and not stale.exists()
