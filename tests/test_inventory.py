"""`omniforge inventory`: true sizes with external data, missing data, and the pipeline link,
each link known by its shapes, whatever its exporter named its inputs and outputs."""

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
from omniforge.inventory import (
    AUDIO_ENCODER,
    CONDITIONING,
    DIT,
    PROJECTION,
    TALKER,
    TALKER_FUSED,
    TALKER_KV,
    UNKNOWN,
    VOCODER,
    inventory,
    name_models,
)
from omniforge.params import FP32

F, I32, I64 = TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64
Spec = tuple[str, int, list[int | str]]


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


def stub_model(folder: Path, inputs: list[Spec], outputs: list[Spec]) -> Path:
    """A graph with these inputs and outputs (name, element type, shape) made by one opaque
    node: the inventory reads a graph's signature, it never runs it."""
    node = helper.make_node(
        "Stub", [n for n, _, _ in inputs], [n for n, _, _ in outputs], domain="test.stub"
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(*spec) for spec in inputs],
        [helper.make_tensor_value_info(*spec) for spec in outputs],
    )
    opsets = [helper.make_opsetid("", 20), helper.make_opsetid("test.stub", 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    folder.mkdir(parents=True)
    save_model(model, folder)
    return folder


def foreign_talker(folder: Path, width: int, vocab: int, layers: int = 0) -> Path:
    """A talker as another exporter writes it: other names, its cache as ``cache.N.k``."""
    cache = [(f"cache.{i}.{kv}", F, ["b", 2, "p", 8]) for i in range(layers) for kv in "kv"]
    present = [(f"new.{i}.{kv}", F, ["b", 2, "p+s", 8]) for i in range(layers) for kv in "kv"]
    inputs = [
        ("hidden_states", F, ["b", "s", width]),
        ("codes", I64, ["b", "s"]),
        ("rope", I64, [3, "b", "s"]),
    ]
    return stub_model(folder, inputs + cache, [("lm_logits", F, ["b", "s", vocab]), *present])


def token2wav(root: Path, mel: int = 80, code_embed: int = 512) -> None:
    """Conditioning and DiT step as another exporter names them."""
    stub_model(
        root / "conditioning",
        [("tokens", I64, ["b", "n"]), ("ref", F, ["b", "f", mel]), ("spk", F, ["b", 192])],
        [("c", F, ["r", "q", 512]), ("s1", F, ["r", 128]), ("s2", F, ["r", 192])],
    )
    stub_model(
        root / "dit",
        [
            ("x", F, ["r", "f", mel]),
            ("t", F, ["r"]),
            ("c", F, ["r", "f", code_embed]),
            ("s1", F, ["r", 128]),
            ("s2", F, ["r", 192]),
        ],
        [("v", F, ["r", "f", mel])],
    )


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every link from "other exporters": no input or output carries omniforge's name."""
    root = tmp_path_factory.mktemp("foreign")
    stub_model(
        root / "encoder",
        [("feats", F, ["n", 128, "t"]), ("lens", I64, ["n"])],
        [("enc_out", F, ["n", "p", 32])],
    )
    linear_model(root / "projection", "x", "y", 32, 64)  # keeps its length: the encoder tells
    foreign_talker(root / "talker", 64, 8448)
    foreign_talker(root / "talker-kv", 64, 8448, layers=2)
    foreign_talker(root / "old-talker", 48, 4096)
    token2wav(root)
    stub_model(root / "vocoder", [("mel", F, ["b", 80, "f"])], [("audio", F, ["b", "samples"])])
    stub_model(
        root / "vocoder-100", [("spec", F, ["b", 100, "f"])], [("wav", F, ["b", 1, "samples"])]
    )
    stub_model(root / "classifier", [("pixels", F, ["b", 10])], [("scores", F, ["b", 3])])
    return root


def test_every_link_is_known_by_its_shapes_not_its_names(foreign: Path) -> None:
    reports = {r.path.removesuffix("/model.onnx"): r for r in inventory(foreign)}
    assert {path: r.role for path, r in reports.items()} == {
        "classifier": UNKNOWN,
        "conditioning": CONDITIONING,
        "dit": DIT,
        "encoder": AUDIO_ENCODER,
        "old-talker": TALKER,
        "projection": PROJECTION,
        "talker": TALKER,
        "talker-kv": TALKER_KV,
        "vocoder": VOCODER,
        "vocoder-100": VOCODER,
    }
    widths = {path: (r.input_width, r.output_width) for path, r in reports.items()}
    assert widths["encoder"] == (128, 32) and widths["projection"] == (32, 64)
    assert widths["talker"] == (64, 8448) and widths["dit"] == (80, 80)
    assert widths["conditioning"] == (80, 512) and widths["vocoder"] == (80, None)
    assert {path for path, r in reports.items() if not r.ok} == {"old-talker", "vocoder-100"}
    assert reports["classifier"].fits == [] and reports["classifier"].problems == []
    assert reports["projection"].fits == [
        "reads encoder/model.onnx",
        "feeds talker/model.onnx, talker-kv/model.onnx",
    ]
    assert reports["dit"].fits == ["reads conditioning/model.onnx", "feeds vocoder/model.onnx"]
    assert reports["talker-kv"].fits[0] == "reads projection/model.onnx"


def test_an_old_talker_fits_no_chain_and_a_vocoder_must_take_the_dits_mel(foreign: Path) -> None:
    reports = {r.path.removesuffix("/model.onnx"): r for r in inventory(foreign)}
    old = reports["old-talker"]
    assert old.fits == []
    assert old.problems == [
        "fits no chain: no projection here writes its width 48 and its vocabulary 4096 "
        "cannot hold Token2Wav's codes",
        "input width 48 matches no projection here (they write [64])",
        "vocabulary 4096 does not hold Token2Wav's codes [0, 8193)",
    ]
    assert reports["vocoder-100"].problems == [
        "mel dim 100 matches no Token2Wav DiT here (they write [80])"
    ]


def test_a_dit_must_take_the_conditionings_embeddings(tmp_path: Path) -> None:
    token2wav(tmp_path, code_embed=256)
    reports = {r.path.removesuffix("/model.onnx"): r for r in inventory(tmp_path)}
    assert reports["dit"].role == DIT and reports["conditioning"].role == CONDITIONING
    assert reports["dit"].problems == [
        "conditioning input 256 per position, 128/192 per row matches no Token2Wav "
        "conditioning here (they write [512 per position, 128/192 per row])"
    ]
    assert reports["conditioning"].problems == [
        "output 512 per position, 128/192 per row is read by no Token2Wav DiT here"
    ]


def test_a_talker_whose_cache_does_not_round_trip_is_named(tmp_path: Path) -> None:
    stub_model(
        tmp_path / "talker",
        [
            ("h", F, ["b", "s", 64]),
            ("pos", I64, [3, "b", "s"]),
            ("k", F, ["b", 2, "p", 8]),
            ("v", F, ["b", 2, "p", 8]),
        ],
        [("out", F, ["b", "s", 8448]), ("k2", F, ["b", 2, "q", 8])],
    )
    (report,) = inventory(tmp_path)
    assert report.role == TALKER_KV
    assert report.problems == [
        "its cache does not round-trip: 2 past inputs, 1 present outputs, or their "
        "[kv_heads, head_dim] differ"
    ]


def test_a_fused_talker_is_known_by_its_attention_lengths(tmp_path: Path) -> None:
    stub_model(
        tmp_path / "fused",
        [
            ("h", F, ["b", "s", 64]),
            ("pos", I64, [3, "b", "s"]),
            ("lengths", I32, ["b"]),
            ("total", I32, []),
            ("k", F, ["b", 2, "buffer", 8]),
        ],
        [("out", F, ["b", "s", 8448]), ("k2", F, ["b", 2, "buffer", 8])],
    )
    (report,) = inventory(tmp_path)
    assert report.role == TALKER_FUSED and report.ok


ROLES = {
    "audio_encoder": AUDIO_ENCODER,
    "projection": PROJECTION,
    "talker": TALKER,
    "talker_kv": TALKER_KV,
    "talker_fused": TALKER_FUSED,
    "token2wav_conditioning": CONDITIONING,
    "token2wav_dit": DIT,
    "token2wav_vocoder": VOCODER,
}


def test_the_exported_tiny_graphs_are_each_named_by_their_role_and_fit(
    tiny_variants: dict[str, dict[str, Path]], tmp_path: Path
) -> None:
    """The tiny preset's widths (audio d_model 32, thinker hidden 64) meet as the real ones."""
    for component in ROLES:
        shutil.copytree(tiny_variants[component][FP32], tmp_path / component)
    reports = inventory(tmp_path)
    assert {r.path.partition("/")[0]: r.role for r in reports} == ROLES
    assert [(r.path, r.problems) for r in reports if not r.ok] == []
    assert all(r.fits for r in reports)


def test_a_lone_sequence_map_too_narrow_for_codes_is_no_talker(tmp_path: Path) -> None:
    """[batch, seq, 64] → [batch, seq, 10] keeps its length like a bare talker, but ten
    outputs cannot be a codec vocabulary and no projection here makes it a talker."""
    linear_model(tmp_path / "tagger", "tokens", "labels", 64, 10)
    (report,) = inventory(tmp_path)
    assert report.role == UNKNOWN and report.fits == []
    assert report.problems == [
        "fits no link: shaped like a talker without positions, but its output width 10 is too "
        "narrow for a codec vocabulary (a talker's holds Token2Wav's codes [0, 8193) and the "
        "control ids (8292, 8293, 8294, 8296): 8297 or more)"
    ]
    # As wide as a codec vocabulary, the same shapes alone are a talker.
    linear_model(tmp_path / "talker", "tokens", "logits", 64, 8448)
    roles = {r.path: r.role for r in inventory(tmp_path)}
    assert roles == {"tagger/model.onnx": UNKNOWN, "talker/model.onnx": TALKER}
