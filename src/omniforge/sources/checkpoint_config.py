"""A checkpoint's config.json: checked field by field before transformers reads it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omniforge.errors import SourceError

if TYPE_CHECKING:
    from transformers import Qwen2_5OmniConfig

CONFIG_NAME = "config.json"
INDEX_NAME = "model.safetensors.index.json"
MODEL_TYPE = "qwen2_5_omni"

# Fields that must be written in config.json: transformers' defaults for them are not the
# released checkpoints' values (the talker defaults to hidden 3584, 28 layers), and head
# counts are not recoverable from tensor shapes (12 x 128 and 24 x 64 give the same q_proj).
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "talker_config": (
        "vocab_size",
        "embedding_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
    ),
    "thinker_config.audio_config": ("d_model", "output_dim"),
    "token2wav_config.dit_config": ("num_embeds",),
}


def _section(raw: Mapping[str, Any], dotted: str, where: Path) -> Mapping[str, Any]:
    node: Any = raw
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
        if node is None:
            raise SourceError(
                f"{where}: field '{dotted}' is missing: not a Qwen2.5-Omni config with a talker"
            )
    if not isinstance(node, Mapping):
        raise SourceError(f"{where}: field '{dotted}' must be an object")
    return node


def _mrope_section(talker: Mapping[str, Any], where: Path) -> list[int]:
    # Older checkpoints write rope_scaling, transformers 5 writes rope_parameters.
    for key in ("rope_parameters", "rope_scaling"):
        rope = talker.get(key)
        if isinstance(rope, Mapping) and rope.get("mrope_section") is not None:
            section = rope["mrope_section"]
            if not (
                isinstance(section, list)
                and len(section) == 3
                and all(isinstance(v, int) and v > 0 for v in section)
            ):
                raise SourceError(
                    f"{where}: field 'talker_config.{key}.mrope_section' must be three "
                    f"positive integers, got {section!r}"
                )
            return section
    # transformers would silently fall back to [16, 24, 24].
    raise SourceError(
        f"{where}: field 'talker_config.rope_scaling.mrope_section' "
        "(or rope_parameters.mrope_section) is missing"
    )


def check_omni_config(raw: Any, where: Path) -> None:
    """Fail, naming the field, unless ``raw`` describes a float Qwen2.5-Omni model with a talker."""
    if not isinstance(raw, Mapping):
        raise SourceError(f"{where}: expected a JSON object")
    model_type = raw.get("model_type")
    if model_type != MODEL_TYPE:
        raise SourceError(
            f"{where}: field 'model_type' is {model_type!r}, expected '{MODEL_TYPE}': "
            "not a Qwen2.5-Omni checkpoint"
        )
    if raw.get("quantization_config") is not None:
        method = raw["quantization_config"]
        method = method.get("quant_method") if isinstance(method, Mapping) else method
        raise SourceError(
            f"{where}: field 'quantization_config' ({method}): quantized checkpoints are not "
            "supported; export needs the float (bf16/fp16/fp32) weights"
        )
    for dotted, names in REQUIRED_FIELDS.items():
        section = _section(raw, dotted, where)
        for name in names:
            if section.get(name) is None:
                raise SourceError(f"{where}: field '{dotted}.{name}' is missing")
    talker = _section(raw, "talker_config", where)
    section = _mrope_section(talker, where)
    head_dim = talker.get("head_dim")
    if head_dim is not None and 2 * sum(section) != head_dim:
        raise SourceError(
            f"{where}: field 'talker_config.head_dim' is {head_dim} but mrope_section {section} "
            f"covers {2 * sum(section)} dims"
        )


def read_config(directory: Path) -> tuple[Qwen2_5OmniConfig, dict[str, Any]]:
    """The checked Qwen2.5-Omni config of a checkpoint directory, and the raw JSON."""
    from transformers import Qwen2_5OmniConfig

    path = directory / CONFIG_NAME
    if not path.is_file():
        raise SourceError(f"{directory}: no {CONFIG_NAME}: not a Hugging Face checkpoint directory")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SourceError(f"{path}: not valid JSON: {err}") from None
    check_omni_config(raw, path)
    try:
        config = Qwen2_5OmniConfig.from_dict(raw)
    except Exception as err:  # transformers' strict configs raise several error types
        raise SourceError(f"{path}: invalid Qwen2.5-Omni config: {err}") from None
    return config, raw
