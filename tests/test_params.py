from pathlib import Path

import pytest

from omniforge.components import check_component_names
from omniforge.errors import ParamsError
from omniforge.params import MAX_OPSET, MIN_OPSET, load_params, parse_params
from omniforge.stage import load_checked_params

REPO = Path(__file__).resolve().parents[1]


def test_repo_params_yaml_is_valid() -> None:
    """Whatever values an experiment set: the file parses and names known components."""
    params = load_checked_params(REPO / "params.yaml")
    assert params.components


def test_unknown_key_is_named() -> None:
    with pytest.raises(ParamsError, match=r"quantize\.int4\.blok_size: unknown key"):
        parse_params({"quantize": {"int4": {"blok_size": 64}}})


def test_unknown_section_is_named() -> None:
    with pytest.raises(ParamsError, match=r"benchmarks: unknown key"):
        parse_params({"benchmarks": {}})


def test_wrong_type_is_named() -> None:
    with pytest.raises(ParamsError, match=r"benchmark\.threads"):
        parse_params({"benchmark": {"threads": "many"}})


def test_bad_choice_is_named() -> None:
    with pytest.raises(ParamsError, match=r"quantize\.int4\.block_size"):
        parse_params({"quantize": {"int4": {"block_size": 48}}})


@pytest.mark.parametrize("key", ["hybrid_prefill", "hybrid_decode", "speedup_reference"])
def test_a_variant_the_talker_settings_name_must_be_built(key: str) -> None:
    with pytest.raises(ParamsError, match=rf"talker_kv\.{key}: 'int3' is not a built variant"):
        parse_params({"talker_kv": {key: "int3"}})
    with pytest.raises(ParamsError, match=r"speedup_reference: fp32 is too large"):
        parse_params({"talker_kv": {"speedup_reference": "fp32"}})


def test_validate_section_keeps_its_yaml_name() -> None:
    params = parse_params({"validate": {"seed": 7}})
    assert params.validate_.seed == 7
    assert params.as_dict()["validate"]["seed"] == 7


def test_validate_shapes_must_differ_in_every_dynamic_axis() -> None:
    shapes = {
        "talker": [{"batch": 2, "length": 8}, {"batch": 2, "length": 9}],
        "projection": [{"batch": 2, "length": 8}, {"batch": 3, "length": 9}],
    }
    with pytest.raises(ParamsError, match="validate.shapes.talker needs two shapes"):
        parse_params({"validate": {"shapes": shapes}})


def test_every_component_needs_benchmark_lengths() -> None:
    lengths = {"audio_encoder": [8], "talker": [8], "projection": [8]}
    with pytest.raises(
        ParamsError, match="benchmark.lengths has no entry for component 'talker_kv'"
    ):
        parse_params({"benchmark": {"lengths": lengths}})


def test_entries_for_components_not_built_or_unknown_are_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    params = parse_params({"components": ["talker", "projection"], "assemblies": []})
    assert params.components == ["talker", "projection"]
    check_component_names(params)
    lengths = {
        "talker": [8],
        "talker_kv": [8],
        "talker_fused": [8],
        "projection": [8],
        "encoder": [8],
    }
    built = [name for name in lengths if name != "encoder"]
    check_component_names(
        parse_params({"components": built, "assemblies": [], "benchmark": {"lengths": lengths}})
    )
    assert "benchmark.lengths.encoder names no component: ignored" in caplog.text


def test_an_unknown_component_to_build_is_named_with_the_known_ones() -> None:
    shapes = {"encoder": [{"batch": 1, "length": 1}, {"batch": 2, "length": 2}]}
    raw = {
        "components": ["encoder"],
        "benchmark": {"lengths": {"encoder": [8]}},
        "validate": {"shapes": shapes},
    }
    with pytest.raises(ParamsError, match=r"components: unknown component 'encoder' \(known: \["):
        check_component_names(parse_params(raw))


def test_an_assembly_needs_its_parts_built_and_is_not_a_component() -> None:
    with pytest.raises(
        ParamsError,
        match=r"assemblies: 'token2wav' is made of \['token2wav_conditioning', 'token2wav_dit', "
        r"'token2wav_vocoder'\], which components does not build",
    ):
        check_component_names(parse_params({"components": ["talker"]}))
    lengths = {"talker": [8], "token2wav": [8]}
    shape = [{"batch": 1, "length": 1}, {"batch": 2, "length": 2}]
    shapes = {"talker": shape, "token2wav": shape}
    raw = {
        "components": ["talker", "token2wav"],
        "assemblies": [],
        "benchmark": {"lengths": lengths},
        "validate": {"shapes": shapes},
    }
    with pytest.raises(ParamsError, match="'token2wav' is an assembly of other graphs"):
        check_component_names(parse_params(raw))
    with pytest.raises(ParamsError, match="unknown assembly 'vocoder'"):
        check_component_names(parse_params({"assemblies": ["vocoder"]}))
    with pytest.raises(
        ParamsError, match=r"token2wav.settings.fast: .*sway_coefficient must be fi"
    ):
        parse_params(
            {"token2wav": {"settings": {"default": {}, "fast": {"sway_coefficient": 1e999}}}}
        )
    with pytest.raises(ParamsError, match="needs a setting named 'default'"):
        parse_params({"token2wav": {"settings": {"fast": {"num_steps": 5}}}})


def test_components_must_be_listed_once_and_not_be_empty() -> None:
    with pytest.raises(ParamsError, match="components: List should have at least 1 item"):
        parse_params({"components": []})
    with pytest.raises(ParamsError, match=r"listed more than once: \['talker'\]"):
        parse_params({"components": ["talker", "projection", "talker"]})


def test_unknown_preset_is_named_with_the_known_ones() -> None:
    with pytest.raises(ParamsError, match=r"model\.preset: .*unknown preset .*'lite'"):
        parse_params({"model": {"preset": "huge"}})


def test_opset_must_be_one_the_exporter_has() -> None:
    assert parse_params({"export": {"opset": MAX_OPSET}}).export.opset == MAX_OPSET
    for opset in (MIN_OPSET - 1, MAX_OPSET + 1, 99):
        with pytest.raises(ParamsError, match=r"export\.opset"):
            parse_params({"export": {"opset": opset}})


def test_opset_bounds_are_the_exporters() -> None:
    from torch.onnx import _constants
    from torch.onnx._internal.exporter import _constants as exporter_constants

    assert MAX_OPSET == _constants.ONNX_MAX_OPSET
    assert MIN_OPSET == exporter_constants.TORCHLIB_OPSET


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("min_cosine", 2.0),
        ("min_cosine", -0.1),
        ("min_top1_agreement", 1.5),
        ("min_forced_cosine", 1.01),
        ("min_forced_top1_agreement", -1),
        ("max_abs_error", -0.5),
        ("max_p50_ms", 0),
        ("max_decode_real_time_factor", -1),
    ],
)
def test_gate_thresholds_outside_their_meaning_are_named(key: str, value: float) -> None:
    with pytest.raises(ParamsError, match=rf"publish\.gates\.int8\.{key}"):
        parse_params({"publish": {"gates": {"int8": {key: value}}}})


def test_pretrained_needs_a_path_or_hub_id() -> None:
    with pytest.raises(ParamsError, match="model.path or model.hub_id"):
        parse_params({"model": {"source": "pretrained"}})


def test_export_example_sizes_must_stay_dynamic() -> None:
    with pytest.raises(ParamsError, match=r"export\.example_batch"):
        parse_params({"export": {"example_batch": 1}})


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_the_chain_setting_must_be_a_token2wav_setting() -> None:
    with pytest.raises(ParamsError, match="chain.setting: 'slow' is not a token2wav setting"):
        parse_params({"chain": {"setting": "slow"}})
