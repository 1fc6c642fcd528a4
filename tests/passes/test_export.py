"""Export, simplify and quantize the tiny preset: bytes, dynamic dims, parity, quant ops."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import TOKEN2WAV_COMPONENTS

from omniforge.artifacts import SOURCE_FILENAME, artifact_bytes, artifact_files, graph_signature
from omniforge.components import get_component
from omniforge.params import ExportParams
from omniforge.passes.export import export_component
from omniforge.runtime.session import open_unverified_session
from omniforge.sources.synthetic import SyntheticSource
from omniforge.validate.parity import compare, run_onnx, run_torch


def test_export_is_byte_identical_for_the_same_params(tmp_path: Path, tiny_exports: dict) -> None:
    again = export_component(
        get_component("projection"), SyntheticSource("tiny", 0), tmp_path / "again", ExportParams()
    )
    first = {r.name: r.sha256 for r in artifact_files(tiny_exports["projection"])}
    assert {r.name: r.sha256 for r in artifact_files(again)} == first


def test_export_strips_the_exporters_stack_traces(tiny_exports: dict) -> None:
    model = onnx.load(str(tiny_exports["talker"] / "model.onnx"), load_external_data=False)
    assert all(not node.metadata_props for node in model.graph.node)
    assert not model.graph.metadata_props
    assert b".py" not in (tiny_exports["talker"] / "model.onnx").read_bytes()


def test_a_different_seed_gives_different_weights(tmp_path: Path, tiny_exports: dict) -> None:
    other = export_component(
        get_component("projection"), SyntheticSource("tiny", 1), tmp_path / "seed1", ExportParams()
    )
    first = {r.name: r.sha256 for r in artifact_files(tiny_exports["projection"])}
    assert {r.name: r.sha256 for r in artifact_files(other)} != first


def test_export_writes_external_data_and_the_source_record(
    tiny_variants: dict, tiny_exports: dict
) -> None:
    exported = tiny_exports["talker"]
    assert (exported / "model.onnx.data").stat().st_size > 100_000
    assert (exported / SOURCE_FILENAME).read_text().count('"preset": "tiny"') == 1
    sizes = artifact_bytes(tiny_variants["talker"]["fp32"])
    assert sizes["external_data_bytes"] > 10 * sizes["graph_bytes"]


@pytest.mark.parametrize("name", ["talker", "projection", *TOKEN2WAV_COMPONENTS])
def test_io_names_and_dynamic_axes(
    tiny_variants: dict, tiny_source: SyntheticSource, name: str
) -> None:
    component = get_component(name)
    signature = graph_signature(tiny_variants[name]["fp32"])
    assert [v["name"] for v in signature["inputs"]] == list(
        component.input_axes(tiny_source.configs)
    )
    assert [v["name"] for v in signature["outputs"]] == list(
        component.output_axes(tiny_source.configs)
    )
    for value in signature["inputs"]:
        for axis in component.input_axes(tiny_source.configs)[value["name"]]:
            assert isinstance(value["shape"][axis], str), (value, axis)


@pytest.mark.parametrize(
    ("name", "batch", "length"),
    [
        ("talker", 3, 5),
        ("projection", 3, 17),
        ("token2wav_conditioning", 3, 11),
        ("token2wav_dit", 5, 37),
        ("token2wav_vocoder", 3, 9),
    ],
)
def test_fp32_matches_torch_at_another_shape(
    tiny_variants: dict, tiny_source: SyntheticSource, name: str, batch: int, length: int
) -> None:
    component = get_component(name)
    inputs = component.make_inputs(tiny_source.configs, batch, length, seed=5)
    names = list(component.output_axes(tiny_source.configs))
    reference = run_torch(component.build_module(tiny_source), inputs, names)
    outputs = run_onnx(open_unverified_session(tiny_variants[name]["fp32"]), inputs)
    for output in names:
        figures = compare(reference[output], outputs[output], output == component.logits_output)
        assert figures["max_abs_error"] < 1e-4
        assert figures["cosine"] > 0.99999
    if name == "projection":
        assert outputs["audio_embeds"].shape == (batch, length // 2, 64)


def test_compare_reports_top1_and_rejects_shape_mismatch() -> None:
    reference = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=np.float32)
    candidate = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    figures = compare(reference, candidate, is_logits=True)
    assert figures["top1_agreement"] == 0.5
    assert figures["max_abs_error"] == 1.0
    with pytest.raises(ValueError, match="shape mismatch"):
        compare(reference, candidate[:1], is_logits=False)
