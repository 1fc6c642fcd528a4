"""PretrainedSource: a tiny real Qwen2.5-Omni checkpoint, saved sharded, read back in parts."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_omni import THINKER_HIDDEN, audio_tower, build_tiny_omni, save_checkpoint, tower_tail

from omniforge.errors import ContractError, SourceError
from omniforge.params import ModelParams
from omniforge.sources import open_source
from omniforge.sources.dvc_dependency import check_dvc_dependency, dvc_dependency
from omniforge.sources.hub import hub_repo_cache, resolve_hub_snapshot
from omniforge.sources.pretrained import PretrainedSource

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def editable(checkpoint: Path, tmp_path: Path) -> Path:
    """A private copy of the checkpoint that a test may break."""
    return Path(shutil.copytree(checkpoint, tmp_path / "copy"))


def talker_inputs(batch: int = 2, length: int = 7) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    return {
        "inputs_embeds": torch.randn(batch, length, THINKER_HIDDEN, generator=g),
        "position_ids": torch.arange(length).expand(3, batch, length).clone(),
    }


def talker_logits(talker: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return talker(**talker_inputs(), use_cache=False).logits


def read_index(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "model.safetensors.index.json").read_text())


def edit_shard(directory: Path, tensor: str, change: Callable[[dict[str, torch.Tensor]], None]):
    """Rewrite the shard holding ``tensor`` after ``change`` edits its tensors in place."""
    index = read_index(directory)
    shard = directory / index["weight_map"][tensor]
    tensors = load_file(shard)
    change(tensors)
    save_file(tensors, shard, metadata={"format": "pt"})
    index["weight_map"] = {
        k: v for k, v in index["weight_map"].items() if v != shard.name or k in tensors
    }
    index["weight_map"].update(dict.fromkeys(tensors, shard.name))
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))


def edit_config(directory: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = directory / "config.json"
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


# -- loading -------------------------------------------------------------------------------


def test_checkpoint_is_sharded_with_an_index(checkpoint: Path) -> None:
    index = read_index(checkpoint)
    talker_shards = {v for k, v in index["weight_map"].items() if k.startswith("talker.")}
    assert len(set(index["weight_map"].values())) > 3
    assert len(talker_shards) >= 2, "the talker should span shards"


def test_talker_matches_the_models_own_talker(omni: torch.nn.Module, checkpoint: Path) -> None:
    talker = PretrainedSource(checkpoint).talker()
    assert type(talker).__name__ == "Qwen2_5OmniTalkerForConditionalGeneration"
    assert not talker.training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in talker.parameters())
    assert all(not t.is_meta for t in [*talker.parameters(), *talker.buffers()])
    expected = talker_logits(omni.talker)
    got = talker_logits(talker)
    assert got.shape == (2, 7, 8448)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_audio_head_matches_the_towers_tail(omni: torch.nn.Module, checkpoint: Path) -> None:
    head = PretrainedSource(checkpoint).audio_head()
    assert not head.training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in head.parameters())
    states = torch.randn(3, 10, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        got = head(states)
    expected = tower_tail(audio_tower(omni), states)
    assert got.shape == (3, 5, THINKER_HIDDEN)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_audio_tower_matches_the_models_own(omni: torch.nn.Module, checkpoint: Path) -> None:
    tower = PretrainedSource(checkpoint).audio_tower()
    assert type(tower).__name__ == "Qwen2_5OmniAudioEncoder" and not tower.training
    expected = audio_tower(omni).state_dict()
    loaded = tower.state_dict()
    assert loaded.keys() == expected.keys() and len(tower.layers) == 2
    assert all(torch.equal(loaded[name], expected[name].float()) for name in expected)


def test_token2wav_matches_the_models_own(omni: torch.nn.Module, checkpoint: Path) -> None:
    token2wav = PretrainedSource(checkpoint).token2wav()
    assert type(token2wav).__name__ == "Qwen2_5OmniToken2WavModel" and not token2wav.training
    expected = omni.token2wav.state_dict()
    loaded = token2wav.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[name], expected[name].float()) for name in expected)


def test_a_checkpoint_without_token2wav_is_named(editable: Path) -> None:
    index = read_index(editable)
    index["weight_map"] = {
        k: v for k, v in index["weight_map"].items() if not k.startswith("token2wav.")
    }
    (editable / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(SourceError, match="no token2wav.* tensors"):
        PretrainedSource(editable).token2wav()


def test_configs_come_from_the_checkpoint(checkpoint: Path) -> None:
    configs = PretrainedSource(checkpoint).configs
    assert configs.talker.embedding_size == THINKER_HIDDEN
    assert configs.talker.vocab_size == 8448
    assert configs.audio.d_model == 32
    assert configs.audio.output_dim == THINKER_HIDDEN
    assert configs.talker.rope_parameters["mrope_section"] == [2, 1, 1]


def test_bf16_checkpoint_loads_as_fp32(omni: torch.nn.Module, tmp_path: Path) -> None:
    directory = save_checkpoint(omni, tmp_path / "bf16", dtype=torch.bfloat16)
    talker = PretrainedSource(directory).talker()
    assert all(p.dtype == torch.float32 for p in talker.parameters())
    reference = omni.talker.codec_head.weight.to(torch.bfloat16).float()
    assert torch.equal(talker.codec_head.weight, reference)


def test_single_file_checkpoint(omni: torch.nn.Module, tmp_path: Path) -> None:
    directory = save_checkpoint(omni, tmp_path / "single", max_shard_size="1GB")
    assert not (directory / "model.safetensors.index.json").exists()
    source = PretrainedSource(directory)
    torch.testing.assert_close(talker_logits(source.talker()), talker_logits(omni.talker))
    assert [s["name"] for s in source.record()["shards"]] == ["model.safetensors"]


def test_open_source_dispatches_to_the_checkpoint(checkpoint: Path) -> None:
    params = ModelParams(source="pretrained", path=str(checkpoint), dvc_dep=str(checkpoint))
    source = open_source(params)
    assert isinstance(source, PretrainedSource)
    assert source.directory == checkpoint.resolve()


def test_open_source_refuses_a_checkpoint_dvc_does_not_hash(checkpoint: Path) -> None:
    params = ModelParams(source="pretrained", path=str(checkpoint))  # dvc_dep left at presets.py
    with pytest.raises(SourceError, match="set it to model.path"):
        open_source(params)


def test_record_hashes_config_index_and_the_shards_read(checkpoint: Path) -> None:
    record = PretrainedSource(checkpoint).record()
    assert record["kind"] == "pretrained"
    assert record["path"] == str(checkpoint.resolve())
    assert record["hub_id"] is None
    sha = hashlib.sha256((checkpoint / "config.json").read_bytes()).hexdigest()
    assert record["config"]["sha256"] == sha
    assert record["index"]["name"] == "model.safetensors.index.json"
    weight_map = read_index(checkpoint)["weight_map"]
    needed = {
        v
        for k, v in weight_map.items()
        if k.startswith(("talker.", "token2wav.", "thinker.audio_tower."))
    }
    assert {s["name"] for s in record["shards"]} == needed
    assert needed != set(weight_map.values()), "thinker-only shards are neither read nor hashed"
    for shard in record["shards"]:
        data = (checkpoint / shard["name"]).read_bytes()
        assert shard["bytes"] == len(data)
        assert shard["sha256"] == hashlib.sha256(data).hexdigest()


def test_token2wav_metadata_from_the_checkpoint(checkpoint: Path) -> None:
    metadata = PretrainedSource(checkpoint).token2wav_metadata()
    assert (metadata.num_embeds, metadata.mel_dim, metadata.repeats) == (8193, 80, 2)


def test_token2wav_config_disagreeing_with_the_stored_embedding(editable: Path) -> None:
    edit_config(editable, lambda raw: raw["token2wav_config"]["dit_config"].update(num_embeds=4096))
    with pytest.raises(ContractError) as err:
        PretrainedSource(editable).token2wav_metadata()
    message = str(err.value)
    assert "4096" in message and "8193" in message
    assert "config.json" in message and "codec_embed" in message


# -- broken checkpoints --------------------------------------------------------------------


def test_missing_tensor_is_named(editable: Path) -> None:
    name = "talker.model.layers.1.mlp.up_proj.weight"
    edit_shard(editable, name, lambda tensors: tensors.pop(name))
    with pytest.raises(SourceError, match=r"talker\.model\.layers\.1\.mlp\.up_proj\.weight"):
        PretrainedSource(editable).talker()


def test_tensor_missing_from_its_shard_is_named(editable: Path) -> None:
    name = "thinker.audio_tower.proj.bias"
    shard = editable / read_index(editable)["weight_map"][name]
    tensors = load_file(shard)
    del tensors[name]
    save_file(tensors, shard, metadata={"format": "pt"})  # the index still names it
    with pytest.raises(SourceError, match=r"thinker\.audio_tower\.proj\.bias is missing"):
        PretrainedSource(editable).audio_head()


def test_missing_shard_is_named(editable: Path) -> None:
    shard = read_index(editable)["weight_map"]["talker.codec_head.weight"]
    (editable / shard).unlink()
    with pytest.raises(SourceError, match=shard):
        PretrainedSource(editable).talker()


def test_wrong_shape_is_named_with_both_shapes(editable: Path) -> None:
    name = "thinker.audio_tower.proj.weight"
    edit_shard(editable, name, lambda tensors: tensors.update({name: torch.zeros(48, 32)}))
    with pytest.raises(SourceError) as err:
        PretrainedSource(editable).audio_head()
    message = str(err.value)
    assert name in message and "[48, 32]" in message and "[64, 32]" in message


def test_unexpected_talker_tensor_is_an_error(editable: Path) -> None:
    # Weights for a third layer that config.json does not describe: exporting two layers
    # would silently drop it.
    name = "talker.model.layers.2.mlp.up_proj.weight"
    edit_shard(editable, "talker.codec_head.weight", lambda t: t.update({name: torch.zeros(1)}))
    with pytest.raises(SourceError, match=r"talker\.model\.layers\.2\.mlp\.up_proj\.weight"):
        PretrainedSource(editable).talker()


def test_unexpected_audio_head_tensor_is_an_error(editable: Path) -> None:
    # The head owns ln_post.* and proj.* only: the tower's layers beside them are not extra.
    name = "thinker.audio_tower.ln_post.extra"
    edit_shard(
        editable, "thinker.audio_tower.proj.weight", lambda t: t.update({name: torch.ones(1)})
    )
    with pytest.raises(
        SourceError, match=r"audio head: tensor thinker\.audio_tower\.ln_post\.extra"
    ):
        PretrainedSource(editable).audio_head()


def test_stored_rope_buffer_is_tolerated(omni: torch.nn.Module, editable: Path) -> None:
    name = "talker.model.rotary_emb.inv_freq"
    edit_shard(
        editable, "talker.codec_head.weight", lambda t: t.update({name: torch.full((4,), 9.0)})
    )
    talker = PretrainedSource(editable).talker()
    # The buffer is computed from the config, not taken from the file.
    assert torch.equal(talker.model.rotary_emb.inv_freq, omni.talker.model.rotary_emb.inv_freq)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda raw: raw.update(model_type="qwen2"), "model_type"),
        (lambda raw: raw.pop("talker_config"), "talker_config"),
        (lambda raw: raw["thinker_config"].pop("audio_config"), "thinker_config.audio_config"),
        (
            lambda raw: raw["talker_config"].pop("num_attention_heads"),
            "talker_config.num_attention_heads",
        ),
        (lambda raw: raw["talker_config"].pop("rope_parameters"), "mrope_section"),
        (lambda raw: raw["talker_config"].update(head_dim=16), "talker_config.head_dim"),
        (
            lambda raw: raw["token2wav_config"]["dit_config"].pop("num_embeds"),
            "token2wav_config.dit_config.num_embeds",
        ),
        (lambda raw: raw.update(quantization_config={"quant_method": "gptq"}), "gptq"),
        (
            lambda raw: raw["talker_config"].update(hidden_size="wide"),
            "hidden_size",
        ),
    ],
    ids=[
        "model_type",
        "no-talker",
        "no-audio",
        "no-heads",
        "no-mrope",
        "head-dim",
        "no-num-embeds",
        "quantized",
        "bad-type",
    ],
)
def test_config_that_is_not_qwen25_omni_is_named(
    editable: Path, change: Callable[[dict[str, Any]], None], field: str
) -> None:
    edit_config(editable, change)
    with pytest.raises(SourceError, match=field.replace(".", r"\.")):
        PretrainedSource(editable)


def test_legacy_rope_scaling_is_read(omni: torch.nn.Module, editable: Path) -> None:
    # Released checkpoints write rope_scaling + rope_theta, as transformers 4 did.
    def legacy(raw: dict[str, Any]) -> None:
        rope = raw["talker_config"].pop("rope_parameters")
        raw["talker_config"]["rope_theta"] = rope.pop("rope_theta")
        raw["talker_config"]["rope_scaling"] = {**rope, "type": "default"}

    edit_config(editable, legacy)
    talker = PretrainedSource(editable).talker()
    torch.testing.assert_close(talker_logits(talker), talker_logits(omni.talker))


def test_not_a_checkpoint_directory(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not a directory"):
        PretrainedSource(tmp_path / "nowhere")
    with pytest.raises(SourceError, match="config.json"):
        PretrainedSource(tmp_path)


# -- the hub cache -------------------------------------------------------------------------


def fake_hub_cache(checkpoint: Path, cache: Path, hub_id: str, commit: str = COMMIT) -> Path:
    """The hub cache layout: blobs named by content hash, snapshots of symlinks, refs."""
    repo = hub_repo_cache(hub_id, cache)
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for path in sorted(checkpoint.iterdir()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        shutil.copyfile(path, repo / "blobs" / digest)
        (snapshot / path.name).symlink_to(Path("../../blobs") / digest)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_hub_id_not_in_cache_says_how_to_fetch(hub_cache: Path) -> None:
    params = ModelParams(source="pretrained", hub_id="Qwen/Qwen2.5-Omni-7B")
    with pytest.raises(SourceError) as err:
        open_source(params)
    message = str(err.value)
    assert "Qwen/Qwen2.5-Omni-7B" in message and str(hub_cache) in message
    assert "hf download Qwen/Qwen2.5-Omni-7B" in message
    assert list(hub_cache.iterdir()) == [], "nothing may be downloaded or created"


def test_hub_id_found_in_the_local_cache(
    omni: torch.nn.Module, checkpoint: Path, hub_cache: Path
) -> None:
    snapshot = fake_hub_cache(checkpoint, hub_cache, "acme/tiny-omni")
    # Tracking a branch (no pinned commit): DVC must hash the repo's cache folder.
    repo_cache = hub_cache / "models--acme--tiny-omni"
    params = ModelParams(source="pretrained", hub_id="acme/tiny-omni", dvc_dep=str(repo_cache))
    source = open_source(params)
    assert isinstance(source, PretrainedSource)
    assert source.directory == snapshot.resolve()
    torch.testing.assert_close(talker_logits(source.talker()), talker_logits(omni.talker))
    record = source.record()
    assert record["hub_id"] == "acme/tiny-omni"
    assert record["revision"] == COMMIT
    assert record["path"] is None
    blob = (snapshot / "config.json").resolve().name
    assert record["config"]["sha256"] == blob


def test_hub_revision_by_commit_and_unknown_revision(checkpoint: Path, hub_cache: Path) -> None:
    fake_hub_cache(checkpoint, hub_cache, "acme/tiny-omni")
    directory, commit = resolve_hub_snapshot("acme/tiny-omni", COMMIT)
    assert commit == COMMIT and directory.name == COMMIT
    with pytest.raises(SourceError, match="--revision v2"):
        resolve_hub_snapshot("acme/tiny-omni", "v2")


# -- DVC -----------------------------------------------------------------------------------


def test_dvc_dependency(checkpoint: Path, hub_cache: Path) -> None:
    assert dvc_dependency(ModelParams()) is None
    local = ModelParams(source="pretrained", path=str(checkpoint))
    assert dvc_dependency(local) == checkpoint.resolve()
    check_dvc_dependency(local, str(checkpoint))
    check_dvc_dependency(local, str(checkpoint.parent))  # a parent covers it too
    with pytest.raises(SourceError, match="does not cover"):
        check_dvc_dependency(local, "src/omniforge/sources/presets.py")
    pinned = ModelParams(source="pretrained", hub_id="acme/tiny-omni", revision=COMMIT)
    assert dvc_dependency(pinned) is None
    check_dvc_dependency(pinned, "src/omniforge/sources/presets.py")
    floating = ModelParams(source="pretrained", hub_id="acme/tiny-omni")
    assert dvc_dependency(floating) == hub_cache / "models--acme--tiny-omni"
    with pytest.raises(SourceError, match="pin model.revision"):
        check_dvc_dependency(floating, "src/omniforge/sources/presets.py")


# -- memory --------------------------------------------------------------------------------

PEAK_RSS_SCRIPT = textwrap.dedent(
    """
    import gc, json, sys
    from pathlib import Path
    import psutil, torch, safetensors.torch
    # Imported before the baseline: importing the modeling code is not loading weights.
    import transformers.models.qwen2_5_omni.modeling_qwen2_5_omni
    from omniforge.sources.pretrained import PretrainedSource

    def peak_rss():
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) * 1024

    directory, mode = sys.argv[1], sys.argv[2]
    gc.collect()
    # Reset the peak to the current RSS (Linux >= 4.0), so the peak is the loading's own.
    Path("/proc/self/clear_refs").write_text("5")
    baseline = psutil.Process().memory_info().rss
    if mode == "source":
        source = PretrainedSource(directory)
        kept = [source.talker(), source.audio_head()]
    else:  # the control: what reading every shard costs
        shards = sorted(Path(directory).glob("*.safetensors"))
        # clone(): load_file's tensors may be lazily mapped until touched.
        kept = [{k: t.clone() for k, t in safetensors.torch.load_file(p).items()} for p in shards]
    print(json.dumps({"baseline": baseline, "peak": peak_rss()}))
    """
)


def peak_rss_growth(directory: Path, mode: str) -> int:
    """Peak RSS growth of a fresh process while it loads ``directory``.

    VmHWM, not ru_maxrss: after fork + exec, ru_maxrss still holds the forking pytest
    process's RSS.
    """
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_SCRIPT, str(directory), mode],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    return numbers["peak"] - numbers["baseline"]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_loading_reads_only_the_needed_tensors(tmp_path: Path) -> None:
    # A thinker whose text embedding and LM head alone are ~256 MB: far larger than the
    # talker (~3 MB) and projection.
    big = build_tiny_omni(seed=1, text_vocab=500_000)
    thinker_bytes = sum(p.numel() * 4 for p in big.thinker.parameters())
    needed_bytes = sum(p.numel() * 4 for p in big.talker.parameters()) + sum(
        p.numel() * 4
        for name in ("ln_post", "proj")
        for p in getattr(audio_tower(big), name).parameters()
    )
    directory = save_checkpoint(big, tmp_path / "big", max_shard_size="64MB")
    del big
    assert thinker_bytes > 60 * needed_bytes

    try:
        growth = peak_rss_growth(directory, "source")
        control = peak_rss_growth(directory, "all")
    finally:
        shutil.rmtree(directory)  # ~250 MB: do not leave it in pytest's kept temp dirs
    # Needed tensors are touched twice (mapped page, fp32 copy); 32 MB covers the modules'
    # Python objects and allocator slack.
    assert growth < 2 * needed_bytes + 32 * 2**20, (growth, needed_bytes, thinker_bytes)
    assert growth < thinker_bytes / 4
    # The control proves the measurement sees reads: loading every shard costs the thinker.
    assert control > 0.8 * thinker_bytes, (control, thinker_bytes)


# -- export --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["talker", "projection"])
def test_onnx_export_matches_the_original_model(
    omni: torch.nn.Module, checkpoint: Path, tmp_path: Path, name: str
) -> None:
    """The exported graph reproduces the saved model's own talker / audio-tower tail."""
    import numpy as np

    from omniforge.artifacts import SOURCE_FILENAME
    from omniforge.components import get_component
    from omniforge.params import ExportParams
    from omniforge.passes.export import export_component
    from omniforge.runtime.session import open_unverified_session
    from omniforge.validate.parity import run_onnx

    component = get_component(name)
    source = PretrainedSource(checkpoint)
    exported = export_component(component, source, tmp_path / name, ExportParams())
    recorded = json.loads((exported / SOURCE_FILENAME).read_text())
    assert recorded["kind"] == "pretrained" and recorded["config"]["sha256"]

    inputs = component.make_inputs(source.configs, batch=3, length=10, seed=5)
    got = next(iter(run_onnx(open_unverified_session(exported), inputs).values()))
    tensors = {key: torch.from_numpy(value) for key, value in inputs.items()}
    if name == "talker":
        with torch.no_grad():
            expected = omni.talker(**tensors, use_cache=False).logits.numpy()
    else:
        expected = tower_tail(audio_tower(omni), tensors["audio_features"]).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_thinker_only_checkpoint_has_no_talker(editable: Path) -> None:
    index = read_index(editable)
    index["weight_map"] = {
        k: v for k, v in index["weight_map"].items() if not k.startswith("talker.")
    }
    (editable / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(SourceError, match=r"no talker\.\* tensors"):
        PretrainedSource(editable).talker()
