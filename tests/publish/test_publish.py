from pathlib import Path

import pytest

from omniforge.artifacts import artifact_bytes, artifact_files
from omniforge.errors import ArtifactError
from omniforge.params import Gate, Params
from omniforge.publish import Candidate, publish
from omniforge.publish.gates import refusals
from omniforge.publish.model_card import describe_variant, model_card
from omniforge.runtime import load_manifest, load_session, read_artifact, verify_all


def gate_reasons(candidate: Candidate, gate: Gate | None) -> list[str]:
    return [
        r.reason for r in refusals(candidate.variant, candidate.parity, candidate.benchmark, gate)
    ]


def _candidate(variant: str, directory: Path, cosine: float, p50_ms: float = 1.0) -> Candidate:
    """A candidate as collect_candidates builds it: validate hashed its files."""
    return Candidate(
        files=artifact_files(directory),
        component="projection",
        variant=variant,
        graphs={"model": directory},
        graph_kind="full-sequence",
        parity={"cosine": cosine, "max_abs_error": 0.01, "top1_agreement": 0.9},
        benchmark={
            # As read back from JSON: keys sorted, so the largest case is named explicitly.
            "latency": {"frames=10": {"p50_ms": p50_ms / 2}, "frames=100": {"p50_ms": p50_ms}},
            "largest_case": "frames=100",
            "largest_case_p50_ms": p50_ms,
            "size": artifact_bytes(directory) if (directory / "model.onnx").exists() else {},
        },
    )


def test_gate_reasons_name_the_failing_figure(tmp_path: Path) -> None:
    gate = Gate(min_cosine=0.99, max_abs_error=0.001, min_top1_agreement=0.95, max_p50_ms=2.0)
    reasons = gate_reasons(_candidate("int8", tmp_path, cosine=0.98, p50_ms=3.0), gate)
    assert any("cosine 0.98 fails the gate (>= 0.99)" in r for r in reasons)
    assert any("max_abs_error 0.01 fails the gate (<= 0.001)" in r for r in reasons)
    assert any("top1_agreement 0.9 fails" in r for r in reasons)
    assert any("3.000 ms exceeds the budget of 2 ms" in r for r in reasons)
    assert gate_reasons(_candidate("int8", tmp_path, cosine=0.999), Gate(min_cosine=0.99)) == []
    assert "no gate is configured" in gate_reasons(_candidate("int2", tmp_path, 1.0), None)[0]


def test_generation_gates_for_the_kv_talker(tmp_path: Path) -> None:
    candidate = _candidate("fp32", tmp_path, cosine=1.0)
    candidate.parity.update(
        generation_steps=48,
        generation_first_divergence_step=20,
        generation_forced_min_cosine=0.95,
        generation_forced_top1_agreement=0.7,
    )
    candidate.benchmark["decode_real_time_factor"] = 1.5
    gate = Gate(
        min_steps_before_divergence=32,
        min_forced_cosine=0.99,
        min_forced_top1_agreement=0.9,
        max_decode_real_time_factor=1.0,
    )
    reasons = gate_reasons(candidate, gate)
    assert any("equal PyTorch's for 20 of 48 steps, the gate asks 32" in r for r in reasons)
    assert any("generation_forced_min_cosine 0.95" in r for r in reasons)
    assert any("generation_forced_top1_agreement 0.7" in r for r in reasons)
    assert any("decode_real_time_factor 1.5 fails the gate (<= 1)" in r for r in reasons)
    candidate.parity["generation_first_divergence_step"] = -1  # no divergence in 48 steps
    assert not any(
        "steps" in r for r in gate_reasons(candidate, Gate(min_steps_before_divergence=32))
    )


def test_publish_copies_what_passes_and_lists_what_does_not(
    tmp_path: Path, tiny_variants: dict
) -> None:
    out = tmp_path / "published"
    candidates = [
        _candidate("fp32", tiny_variants["projection"]["fp32"], cosine=1.0),
        _candidate("int4", tiny_variants["projection"]["int4"], cosine=0.9),
    ]
    gates = {"fp32": Gate(min_cosine=0.9999), "int4": Gate(min_cosine=0.97)}
    manifest = publish(candidates, gates, out, {"projection": {"kind": "synthetic"}}, {"k": 1})
    assert [(a["component"], a["variant"]) for a in manifest["artifacts"]] == [
        ("projection", "fp32")
    ]
    assert manifest["rejected"][0]["variant"] == "int4"
    assert "cosine" in manifest["rejected"][0]["reasons"][0]
    assert not (out / "projection" / "int4").exists()
    artifact = load_manifest(out).artifacts[0]
    assert {f.name for f in artifact.files} == {"model.onnx", "model.onnx.data", "README.md"}
    # The artifact describes itself: its own manifest entry and a model card.
    assert read_artifact(out / "projection" / "fp32") == artifact
    card = (out / "projection" / "fp32" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: onnx\n")
    assert "| `model.onnx.data` |" in card and "load_session" in card
    assert "; float32 weights." in card
    assert artifact.graphs["model"].io["inputs"][0]["name"] == "audio_features"
    assert artifact.source == {"kind": "synthetic"}
    assert "onnxruntime" in manifest["toolchain"]
    assert verify_all(out) == ["projection/fp32"]
    session = load_session(out, "projection", "fp32")
    assert session.get_outputs()[0].name == "audio_embeds"


def test_a_model_card_describes_its_variant_from_the_params_that_built_it() -> None:
    params = Params().as_dict()
    params["quantize"]["int4-wide"] = {**params["quantize"]["int4"], "block_size": 256}
    params["talker_kv"]["hybrid_decode"] = "int4-wide"
    assert describe_variant("int4-wide", params) == (
        "4-bit weight blocks of 256 (MatMulNBits), int8 activations (accuracy level 4)"
    )
    assert "float activations (accuracy level 1)" in describe_variant("int4-exact", params)
    assert "DynamicQuantizeMatMul" in describe_variant("int8", params)
    signature = {"inputs": [], "outputs": []}
    entry = {
        "component": "talker_kv",
        "variant": "hybrid",
        "graph_kind": "kv-cache",
        "files": [],
        "graphs": {
            "prefill": {"folder": "prefill", "io": signature, "built": "talker_kv/int8"},
            "decode": {"folder": "decode", "io": signature, "built": "talker_kv/int4-wide"},
        },
    }
    card = model_card(entry, {}, params)
    assert "`prefill`: talker_kv/int8 (int8 weights per column" in card
    assert "`decode`: talker_kv/int4-wide (4-bit weight blocks of 256" in card
    assert describe_variant("int4-wide", {}) == "int4-wide"


def test_loader_refuses_a_flipped_byte(tmp_path: Path, tiny_variants: dict) -> None:
    out = tmp_path / "published"
    publish(
        [_candidate("fp32", tiny_variants["projection"]["fp32"], cosine=1.0)],
        {"fp32": Gate()},
        out,
        {},
        {},
    )
    data = out / "projection" / "fp32" / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="sha256 .* differs from the manifest"):
        load_session(out, "projection", "fp32")
    with pytest.raises(ArtifactError, match="not published"):
        load_session(out, "talker", "fp32")


def test_running_published_models_needs_no_torch(tmp_path: Path, tiny_variants: dict) -> None:
    """What a voice pipeline imports to run the artifacts: onnxruntime and numpy only."""
    import subprocess
    import sys

    out = tmp_path / "published"
    publish(
        [_candidate("fp32", tiny_variants["projection"]["fp32"], 1.0)],
        {"fp32": Gate()},
        out,
        {},
        {},
    )
    code = (
        "import sys\n"
        "from omniforge.runtime import load_session\n"
        "import omniforge.runtime.talker\n"
        f"load_session({str(out)!r}, 'projection', 'fp32')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
