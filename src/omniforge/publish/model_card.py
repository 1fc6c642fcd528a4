"""A model card for each published artifact, in the Hugging Face convention.

YAML front matter (``library_name``, ``tags``, ``base_model`` when built from a hub
checkpoint), then what the artifact is, its files with their hashes, its inputs and outputs,
the figures that vetted it, and how to load it.
"""

from __future__ import annotations

from typing import Any

import yaml

from omniforge.params import FP32
from omniforge.publish.headline import HEADLINE_KEYS

FILENAME = "README.md"

WHAT = {
    "talker": "the Qwen2.5-Omni talker as one full-sequence graph: thinker hidden states in, "
    "codec logits out",
    "talker_kv": "the Qwen2.5-Omni talker with its KV cache, as the dynamo exporter writes it: "
    "one graph for the prompt and for each decode step, codec embedding inside",
    "talker_fused": "the Qwen2.5-Omni talker with its KV cache, written as onnxruntime's fused "
    "CPU ops (GroupQueryAttention with a shared past/present buffer, RotaryEmbedding, "
    "SkipSimplifiedLayerNormalization, packed q/k/v and gate/up matmuls)",
    "audio_encoder": "the Qwen2.5-Omni audio encoder (convs, sinusoidal positions, encoder "
    "layers) over a padded batch of 2 s chunks of Whisper log-mel features, each attending to "
    "itself: the host cuts utterances into chunks and gathers the states the projection reads",
    "projection": "the Qwen2.5-Omni audio projection (ln_post, stride-2 average pooling, proj): "
    "audio-encoder states in, thinker-space embeddings out",
    "token2wav": "the Qwen2.5-Omni Token2Wav, codec ids to 24 kHz speech, as three graphs: "
    "`conditioning` (code embedding and ECAPA speaker embedding, once per utterance; it "
    "carries the speakers), `dit` (one DiT evaluation: the host runs the RK4 solve) and "
    "`vocoder` (BigVGAN)",
}

# What MatMulNBits computes in at each accuracy_level.
ACTIVATIONS = {0: "float", 1: "float", 2: "fp16", 3: "bf16", 4: "int8"}


def describe_variant(variant: str, params: dict[str, Any]) -> str:
    """What a variant is, from the params that built it (so a new scheme describes itself)."""
    if variant == FP32:
        return "float32 weights"
    scheme = params.get("quantize", {}).get(variant)
    if scheme is None:  # params that do not say how it was built
        return variant
    if scheme["method"] == "int8":
        return "int8 weights per column, activations quantized at run time (DynamicQuantizeMatMul)"
    level = scheme["accuracy_level"]
    return (
        f"4-bit weight blocks of {scheme['block_size']} (MatMulNBits), "
        f"{ACTIVATIONS[level]} activations (accuracy level {level})"
    )


def _front_matter(entry: dict[str, Any]) -> str:
    source = entry.get("source") or {}
    matter: dict[str, Any] = {
        "library_name": "onnx",
        "tags": [
            "onnx",
            "onnxruntime",
            "qwen2.5-omni",
            entry["component"],
            entry["variant"],
            entry["graph_kind"],
            "omniforge",
        ],
    }
    if source.get("hub_id"):
        matter["base_model"] = source["hub_id"]
    return "---\n" + yaml.safe_dump(matter, sort_keys=False) + "---\n"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _source_line(source: dict[str, Any] | None) -> str:
    if not source:
        return "unknown"
    if source.get("kind") == "synthetic":
        return (
            f"synthetic weights (preset `{source.get('preset')}`, seed {source.get('seed')}): "
            "the real architecture, for measuring, not for speech"
        )
    where = source.get("hub_id") or source.get("path")
    return f"checkpoint `{where}` (revision {source.get('revision') or 'as found'})"


def model_card(entry: dict[str, Any], headline: dict[str, Any], params: dict[str, Any]) -> str:
    """The README.md of one published artifact (``entry`` as the manifest lists it; ``params``
    the run's, as the manifest records them)."""
    component, variant = entry["component"], entry["variant"]
    files = [[f"`{f['name']}`", f["bytes"], f"`{f['sha256']}`"] for f in entry["files"]]
    graphs = entry["graphs"]
    io = [
        [role, kind[:-1], f"`{value['name']}`", value["dtype"], value["shape"]]
        for role, graph in graphs.items()
        for kind in ("inputs", "outputs")
        for value in graph["io"][kind]
    ]
    what = describe_variant(variant, params)
    if len(graphs) > 1:
        # Each graph is some built variant: say which, and what that one is.
        built = {role: graph["built"] for role, graph in graphs.items()}
        what = "graphs " + "; ".join(
            f"`{role}`: {name} ({describe_variant(name.split('/')[-1], params)})"
            for role, name in built.items()
        )
    vetting = [[key, headline[key]] for key in HEADLINE_KEYS if key in headline]
    if entry["graph_kind"] == "token2wav":
        loader = (
            "from omniforge.runtime import load_token2wav\n\n"
            f'token2wav = load_token2wav("{variant}", variant=None, threads=2)  # this folder\n'
            "waveform = token2wav.synthesize(codes[None], speaker=None)  # 24 kHz, default voice\n"
        )
    elif entry["graph_kind"] == "audio-encoder":
        loader = (
            "from omniforge.runtime import load_audio_encoder, log_mel_features\n\n"
            f'encoder = load_audio_encoder("{variant}", threads=2)  # this folder, verified\n'
            "states = encoder.encode([log_mel_features(waveform_16khz)])[0]  # projection input\n"
        )
    elif entry["graph_kind"] == "kv-cache":
        loader = (
            "from omniforge.runtime import generate_codes, load_talker\n\n"
            f'talker = load_talker("{variant}", threads=2)  # this folder, hashes verified\n'
            "codes = generate_codes(talker, prompt_embeds, reply_embeds).audio_codes()\n"
        )
    else:
        loader = (
            "from omniforge.runtime import load_session\n\n"
            f'session = load_session("{variant}", threads=2)  # this folder, hashes verified\n'
        )
    return "\n".join(
        [
            _front_matter(entry),
            f"# {component} · {variant}",
            "",
            f"{WHAT.get(component, component)}; {what}.",
            f"Built by omniforge from {_source_line(entry.get('source'))}.",
            "",
            "## Files",
            "",
            "The size of a model is the size of all its files: the graph and its external data.",
            "",
            _table(["file", "bytes", "sha256"], files),
            "",
            "## Inputs and outputs",
            "",
            _table(["graph", "", "name", "dtype", "shape"], io),
            "",
            "## How it was vetted",
            "",
            "Against PyTorch on the same inputs (validate) and timed beside it, and beside the "
            "plain graphs it is compared with (benchmark); "
            "the full figures are in `manifest.json`.",
            "",
            _table(["figure", "value"], vetting),
            "",
            "## How to load",
            "",
            "```python",
            loader.rstrip(),
            "```",
            "",
            "or check it first with `omniforge verify .` (every file against its sha256).",
            "",
        ]
    )
