"""`omniforge inventory`: true sizes with external data, missing data, and the pipeline link."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from omniforge.artifacts import DATA_FILENAME, MODEL_FILENAME, save_model
from omniforge.cli import app
from omniforge.inventory import PROJECTION, TALKER, inventory, name_models


def linear_model(
    folder: Path, input_name: str, output_name: str, width_in: int, width_out: int
) -> Path:
    """[batch, length, width_in] -> MatMul -> [batch, length, width_out], weights external."""
    weight = np.random.default_rng(width_in).standard_normal((width_in, width_out))
    graph = helper.make_graph(
        [helper.make_node("MatMul", [input_name, "weight"], [output_name])],
        "g",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", "len", width_in])],
        [
            helper.make_tensor_value_info(
                output_name, TensorProto.FLOAT, ["batch", "len", width_out]
            )
        ],
        [numpy_helper.from_array(weight.astype(np.float32), "weight")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    folder.mkdir(parents=True)
    save_model(model, folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    linear_model(root / "projection", "audio_features", "audio_embeds", 32, 64)
    # A small graph whose external data holds the whole vocabulary projection: 2.2 MB.
    linear_model(root / "talker-64", "inputs_embeds", "logits", 64, 8448)
    linear_model(root / "talker-48", "inputs_embeds", "logits", 48, 4096)
    shutil.copytree(root / "talker-64", root / "no-data")
    (root / "no-data" / DATA_FILENAME).unlink()
    shutil.copytree(root / "talker-64", root / "truncated")
    data = root / "truncated" / DATA_FILENAME
    data.write_bytes(data.read_bytes()[:1000])
    return root


def test_sizes_include_external_data_and_missing_data_is_named(models: Path) -> None:
    reports = {r.path: r for r in inventory(models)}
    big = reports["talker-64/model.onnx"]
    graph = (models / "talker-64" / MODEL_FILENAME).stat().st_size
    data = (models / "talker-64" / DATA_FILENAME).stat().st_size
    assert big.graph_bytes == graph < 2000 and data == 64 * 8448 * 4
    assert big.total_bytes == graph + data
    assert reports["no-data/model.onnx"].problems == ["external data model.onnx.data is missing"]
    assert reports["no-data/model.onnx"].total_bytes == graph
    assert "truncated (1000 of 2162688 B)" in reports["truncated/model.onnx"].problems[0]


def test_each_model_is_judged_by_the_pipeline_contract(models: Path) -> None:
    reports = {r.path: r for r in inventory(models)}
    assert reports["projection/model.onnx"].role == PROJECTION
    good = reports["talker-64/model.onnx"]
    assert good.role == TALKER and good.ok
    assert good.fits == ["reads projection/model.onnx", "feeds Token2Wav (codes < 8193)"]
    odd = reports["talker-48/model.onnx"]
    assert "input width 48 matches no projection here (they write [64])" in odd.problems
    assert "vocabulary 4096 does not hold Token2Wav's codes [0, 8193)" in odd.problems
    assert "talker-64/model.onnx" in reports["projection/model.onnx"].fits[0]
    assert "talker-48" not in reports["projection/model.onnx"].fits[0]


def test_the_command_prints_one_table_or_json(models: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["inventory", str(models), "--json"])
    assert result.exit_code == 1, "a model with a problem makes the command fail"
    listed = json.loads(result.stdout)
    assert [m["path"] for m in listed] == sorted(m["path"] for m in listed)
    assert listed[0]["total_bytes"] == listed[0]["graph_bytes"] + sum(
        f["bytes_on_disk"] or 0 for f in listed[0]["external"]
    )
    table = runner.invoke(app, ["inventory", str(models / "talker-64")])
    assert table.exit_code == 0
    assert "2.2 MB" in table.stdout and "model.onnx.data" in table.stdout


def test_a_file_that_is_not_onnx_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"not a protobuf at all")
    (report,) = inventory(tmp_path)
    assert report.error and "not a readable ONNX graph" in report.error
    assert onnx  # the reader uses onnx without loading weights


def test_a_long_list_of_fitting_models_is_named_by_its_first_ones_and_a_count() -> None:
    paths = [f"talker-{n}/model.onnx" for n in range(5)]
    assert name_models(paths[:3]) == "talker-0/model.onnx, talker-1/model.onnx, talker-2/model.onnx"
    assert name_models(paths) == "talker-0/model.onnx, talker-1/model.onnx and 3 more"
