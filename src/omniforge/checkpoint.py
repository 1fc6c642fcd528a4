"""A local Qwen2.5-Omni checkpoint as a model source: the talker and the audio head, nothing else.

A Qwen2.5-Omni checkpoint is tens of GB of safetensors shards, almost all of it the thinker.
:class:`PretrainedSource` reads ``config.json``, then only the tensors a component needs
(``talker.*``; ``thinker.audio_tower.{ln_post,proj}.*``) from the shards the index names,
memory-mapped, into modules whose parameters were never allocated before. The thinker and
the whole model are never built, so peak memory is about the fp32 size of what is exported.

A hub id is resolved only through the local hub cache: a build never downloads anything.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from omniforge.errors import SourceError
from omniforge.onnx_io import FileRecord
from omniforge.sources import AudioHead, ModelConfigs, _eval_fp32
from omniforge.token2wav import CODEC_EMBED_KEYS, Token2WavMetadata, from_config, reconcile

if TYPE_CHECKING:
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniTalkerForConditionalGeneration

    from omniforge.params import ModelParams

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
INDEX_NAME = "model.safetensors.index.json"
SINGLE_FILE_NAME = "model.safetensors"
MODEL_TYPE = "qwen2_5_omni"

TALKER_PREFIX = "talker."
AUDIO_TOWER_PREFIX = "thinker.audio_tower."
# avg_pooler has no weights: the audio head is these two modules' tensors only.
AUDIO_HEAD_MODULES: tuple[str, ...] = ("ln_post", "proj")
# The DiT code embedding as the whole model stores it: Token2Wav accepts codes below its rows - 1.
CODEC_EMBED_TENSOR = CODEC_EMBED_KEYS[0]

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
COMMIT_HASH = re.compile(r"[0-9a-f]{40}")


# -- the hub cache -------------------------------------------------------------------------


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment at call time (as huggingface_hub reads it).

    huggingface_hub reads these variables once, at import; reading them here lets a test or a
    stage point at another cache without re-importing it.
    """
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.path.expandvars(os.environ[name])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface",
    )
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def hub_repo_cache(hub_id: str, cache_dir: Path | None = None) -> Path:
    """The cache folder of one model repo: ``<cache>/models--<org>--<name>``."""
    return (cache_dir or hub_cache_dir()) / ("models--" + hub_id.replace("/", "--"))


def fetch_command(hub_id: str, revision: str | None) -> str:
    rev = f" --revision {revision}" if revision else ""
    return (
        f"hf download {hub_id}{rev} --include config.json {INDEX_NAME} '*.safetensors'"
        "  (huggingface-cli download with older huggingface_hub)"
    )


def resolve_hub_snapshot(
    hub_id: str, revision: str | None = None, cache_dir: str | Path | None = None
) -> tuple[Path, str]:
    """The snapshot directory and commit hash of ``hub_id`` at ``revision``, from the cache only.

    Never touches the network. A repo, revision or config.json that is not cached raises a
    SourceError that says how to fetch it.
    """
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    try:
        found = try_to_load_from_cache(hub_id, CONFIG_NAME, cache_dir=cache, revision=revision)
    except (HFValidationError, ValueError) as err:
        raise SourceError(f"model.hub_id '{hub_id}': not a valid hub id: {err}") from None
    if not isinstance(found, str):
        raise SourceError(
            f"model.hub_id '{hub_id}' (revision {revision or 'main'}) is not in the local hub "
            f"cache {cache}: a build never downloads. Fetch it first with\n"
            f"    {fetch_command(hub_id, revision)}\n"
            "or set model.path to a local checkpoint directory."
        )
    snapshot = Path(found).parent
    log.info("hub id %s (revision %s): snapshot %s", hub_id, revision or "main", snapshot)
    return snapshot, snapshot.name


# -- config.json ---------------------------------------------------------------------------


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


# -- the tensor index ----------------------------------------------------------------------


@dataclass(frozen=True)
class TensorIndex:
    """Which shard holds each tensor: from the index, or the keys of a single model.safetensors."""

    directory: Path
    weight_map: dict[str, str]
    index_file: Path | None

    @classmethod
    def read(cls, directory: Path) -> TensorIndex:
        index_path = directory / INDEX_NAME
        if index_path.is_file():
            try:
                raw = json.loads(index_path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise SourceError(f"{index_path}: not valid JSON: {err}") from None
            weight_map = raw.get("weight_map") if isinstance(raw, Mapping) else None
            if not isinstance(weight_map, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
            ):
                raise SourceError(
                    f"{index_path}: field 'weight_map' must map tensor names to files"
                )
            for shard in set(weight_map.values()):
                pure = PurePosixPath(shard)
                if pure.is_absolute() or ".." in pure.parts:
                    raise SourceError(f"{index_path}: shard '{shard}' lies outside the checkpoint")
            return cls(directory, dict(weight_map), index_path)
        single = directory / SINGLE_FILE_NAME
        if single.is_file():
            from safetensors import safe_open

            with safe_open(str(single), framework="pt") as handle:
                keys = list(handle.keys())
            return cls(directory, dict.fromkeys(keys, SINGLE_FILE_NAME), None)
        raise SourceError(
            f"{directory}: neither {INDEX_NAME} nor {SINGLE_FILE_NAME}: only safetensors "
            "checkpoints are supported"
        )

    def names(self, prefix: str) -> list[str]:
        return sorted(name for name in self.weight_map if name.startswith(prefix))

    def shards(self, names: list[str]) -> list[str]:
        return sorted({self.weight_map[name] for name in names if name in self.weight_map})

    def shard_path(self, shard: str) -> Path:
        path = self.directory / shard
        if not path.is_file():
            raise SourceError(f"{path}: shard named by {INDEX_NAME} is missing")
        return path

    def header_shape(self, name: str) -> tuple[int, ...] | None:
        """A tensor's shape from its shard's header (no data read); None if not at hand."""
        from safetensors import safe_open

        if name not in self.weight_map:
            return None
        path = self.directory / self.weight_map[name]
        if not path.is_file():  # e.g. only the talker's shards were downloaded
            return None
        with safe_open(str(path), framework="pt") as handle:
            if name not in set(handle.keys()):
                return None
            return tuple(handle.get_slice(name).get_shape())


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown}, … ({len(names)} in all)" if len(names) > limit else shown


def read_tensors(
    index: TensorIndex, expected: Mapping[str, tuple[int, ...]], what: str
) -> dict[str, torch.Tensor]:
    """Read exactly the ``expected`` tensors as fp32, after checking every name and shape.

    Shards are memory-mapped and only the named tensors' bytes are touched; every shape is
    checked from the headers before any data is read, so a bad checkpoint fails at once.
    """
    from safetensors import safe_open

    missing = sorted(name for name in expected if name not in index.weight_map)
    if missing:
        raise SourceError(
            f"{index.directory}: {what}: tensor {missing[0]} is missing from the checkpoint "
            f"(missing: {_listing(missing)})"
        )
    by_shard: dict[str, list[str]] = {}
    for name in sorted(expected):
        by_shard.setdefault(index.weight_map[name], []).append(name)

    for shard, names in by_shard.items():
        path = index.shard_path(shard)
        with safe_open(str(path), framework="pt") as handle:
            stored = set(handle.keys())
            for name in names:
                if name not in stored:
                    raise SourceError(
                        f"{path}: {what}: tensor {name} is missing (the index places it here)"
                    )
                info = handle.get_slice(name)
                shape = tuple(info.get_shape())
                if shape != tuple(expected[name]):
                    raise SourceError(
                        f"{path}: {what}: tensor {name} has shape {list(shape)}, "
                        f"expected {list(expected[name])} from {CONFIG_NAME}"
                    )
                if info.get_dtype() not in ("F32", "BF16", "F16"):
                    raise SourceError(
                        f"{path}: {what}: tensor {name} is {info.get_dtype()}, expected a float "
                        "dtype (quantized checkpoints are not supported)"
                    )

    tensors: dict[str, torch.Tensor] = {}
    for shard, names in by_shard.items():
        path = index.shard_path(shard)
        log.info("%s: reading %d tensors from %s", what, len(names), path.name)
        for name in names:
            # One mapping per tensor: its touched pages are dropped when the handle closes,
            # so the peak is the fp32 weights plus one stored tensor, not plus a whole shard.
            # copy=True: no parameter stays backed by the file.
            with safe_open(str(path), framework="pt") as handle:
                tensors[name] = handle.get_tensor(name).to(torch.float32, copy=True)
    return tensors


# -- modules without allocated weights -----------------------------------------------------


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Create every parameter on the meta device: no memory, no random init.

    Buffers stay real: RoPE's ``inv_freq`` is computed in ``__init__`` and is not stored in
    checkpoints. (accelerate's ``init_empty_weights(include_buffers=False)`` does the same.)
    """
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = nn.Parameter(
                param.to("meta"), requires_grad=param.requires_grad
            )

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def expected_shapes(module: nn.Module, prefix: str) -> dict[str, tuple[int, ...]]:
    """What the checkpoint must hold for ``module``: its state-dict entries, by full name."""
    return {prefix + name: tuple(t.shape) for name, t in module.state_dict().items()}


def load_into(module: nn.Module, tensors: Mapping[str, torch.Tensor], prefix: str) -> None:
    """Assign the loaded tensors as the module's parameters; fail if anything stays on meta."""
    state = {name.removeprefix(prefix): tensor for name, tensor in tensors.items()}
    module.load_state_dict(state, strict=True, assign=True)
    left = [
        name
        for name, t in (*module.named_parameters(), *module.named_buffers())
        if t.device.type == "meta"
    ]
    if left:
        raise SourceError(f"{prefix}: no weights loaded for {_listing(left)}")


def _non_persistent_buffers(module: nn.Module, prefix: str) -> set[str]:
    names = set()
    for owner_name, owner in module.named_modules():
        for buffer in owner._non_persistent_buffers_set:
            names.add(prefix + (f"{owner_name}.{buffer}" if owner_name else buffer))
    return names


# -- the source ----------------------------------------------------------------------------


class PretrainedSource:
    """A Qwen2.5-Omni checkpoint directory (local, or a hub-cache snapshot).

    Opening reads ``config.json`` and the index only; ``talker()`` and ``audio_head()``
    read their own tensors when called.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        hub_id: str | None = None,
        revision: str | None = None,
    ) -> None:
        self.given_path = str(directory)
        self.directory = Path(directory).expanduser().resolve()
        if not self.directory.is_dir():
            raise SourceError(f"model.path '{directory}': not a directory")
        self.hub_id = hub_id
        self.revision = revision
        self.config, self._raw_config = read_config(self.directory)
        self.configs = ModelConfigs(
            talker=self.config.talker_config,
            audio=self.config.thinker_config.audio_config,
            token2wav=self.config.token2wav_config,
        )
        self.index = TensorIndex.read(self.directory)
        log.info(
            "checkpoint %s: %d tensors, talker hidden %d, %d layers",
            self.directory,
            len(self.index.weight_map),
            self.configs.talker.hidden_size,
            self.configs.talker.num_hidden_layers,
        )

    @classmethod
    def open(cls, params: ModelParams) -> PretrainedSource:
        """The checkpoint that ``model`` params name: ``path``, or ``hub_id`` via the hub cache."""
        if params.path:
            return cls(params.path, revision=params.revision)
        if params.hub_id:
            snapshot, commit = resolve_hub_snapshot(params.hub_id, params.revision)
            return cls(snapshot, hub_id=params.hub_id, revision=commit)
        raise SourceError("model.source 'pretrained' needs model.path or model.hub_id")

    # -- modules -----------------------------------------------------------------------

    def talker(self) -> Qwen2_5OmniTalkerForConditionalGeneration:
        from transformers import Qwen2_5OmniTalkerForConditionalGeneration

        if not self.index.names(TALKER_PREFIX):
            raise SourceError(
                f"{self.directory}: no talker.* tensors: a thinker-only checkpoint "
                "(enable_audio_output false?) has no talker to export"
            )
        with parameters_on_meta():
            model = Qwen2_5OmniTalkerForConditionalGeneration(self.configs.talker)
        expected = expected_shapes(model, TALKER_PREFIX)
        self._reject_unexpected(model, TALKER_PREFIX, expected, "talker")
        load_into(model, read_tensors(self.index, expected, "talker"), TALKER_PREFIX)
        return _eval_fp32(model)

    def audio_head(self) -> AudioHead:
        from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import (
            Qwen2_5OmniAudioEncoder,
        )

        # The tower's own modules, built without its encoder layers: only the tail is needed.
        config = copy.deepcopy(self.configs.audio)
        config.encoder_layers = 0
        with parameters_on_meta():
            tower = Qwen2_5OmniAudioEncoder(config)
        head = AudioHead(tower.ln_post, tower.avg_pooler, tower.proj)
        del tower
        expected: dict[str, tuple[int, ...]] = {}
        for name in AUDIO_HEAD_MODULES:
            prefix = f"{AUDIO_TOWER_PREFIX}{name}."
            shapes = expected_shapes(getattr(head, name), prefix)
            self._reject_unexpected(getattr(head, name), prefix, shapes, "audio head")
            expected.update(shapes)
        tensors = read_tensors(self.index, expected, "audio head")
        load_into(head, tensors, AUDIO_TOWER_PREFIX)
        return _eval_fp32(head)

    def _reject_unexpected(
        self, module: nn.Module, prefix: str, expected: Mapping[str, Any], what: str
    ) -> None:
        """Extra tensors under a component's prefix mean config and weights disagree.

        E.g. a config with fewer layers than the weights: loading would silently export a
        truncated model. Stored copies of non-persistent buffers (RoPE inv_freq) are harmless.
        """
        ignorable = _non_persistent_buffers(module, prefix)
        extra = [n for n in self.index.names(prefix) if n not in expected and n not in ignorable]
        if extra:
            raise SourceError(
                f"{self.directory}: {what}: tensor {extra[0]} is not part of the model that "
                f"{CONFIG_NAME} describes (unexpected: {_listing(extra)})"
            )

    # -- metadata ----------------------------------------------------------------------

    def token2wav_metadata(self) -> Token2WavMetadata:
        """Token2Wav metadata from config.json, checked against the stored code embedding."""
        origin = f"{self.directory / CONFIG_NAME} token2wav_config"
        metadata = from_config(self._raw_config["token2wav_config"], origin)
        shape = self.index.header_shape(CODEC_EMBED_TENSOR)
        if shape is not None:
            stored = Token2WavMetadata(
                num_embeds=shape[0] - 1,
                origin=f"{CODEC_EMBED_TENSOR} ({shape[0]} rows) in {self.directory}",
                stated=("num_embeds",),
            )
            reconcile([metadata, stored])
        return metadata

    def needed_tensors(self) -> list[str]:
        """Every tensor the components read (by name, as the index holds them)."""
        names = self.index.names(TALKER_PREFIX)
        for module in AUDIO_HEAD_MODULES:
            names += self.index.names(f"{AUDIO_TOWER_PREFIX}{module}.")
        return names

    def files_read(self) -> list[Path]:
        """config.json, the index and the shards that hold a needed tensor."""
        files = [self.directory / CONFIG_NAME]
        if self.index.index_file is not None:
            files.append(self.index.index_file)
        files += [self.directory / shard for shard in self.index.shards(self.needed_tensors())]
        return files

    @functools.cached_property
    def _digests(self) -> dict[Path, FileRecord]:
        from omniforge.onnx_io import sha256_file

        digests = {}
        for path in self.files_read():
            size = path.stat().st_size
            log.info("sha256 of %s (%.2f GB)", path.name, size / 1e9)
            digests[path] = FileRecord(path.name, size, sha256_file(path))
        return digests

    def record(self) -> dict[str, Any]:
        """The source for the manifest: where, which revision, and the hash of every file read."""
        digests = self._digests
        index = self.index.index_file
        shards = self.index.shards(self.needed_tensors())
        return {
            "kind": "pretrained",
            # As given in params, not resolved: the record (and the export directory holding
            # it) must not change with where the hub cache or a symlink points.
            "path": None if self.hub_id else self.given_path,
            "hub_id": self.hub_id,
            "revision": self.revision,
            "config": asdict(digests[self.directory / CONFIG_NAME]),
            "index": asdict(digests[index]) if index is not None else None,
            "shards": [asdict(digests[self.directory / shard]) for shard in shards],
        }


# -- DVC -----------------------------------------------------------------------------------


def is_commit_hash(revision: str | None) -> bool:
    return revision is not None and COMMIT_HASH.fullmatch(revision) is not None


def dvc_dependency(params: ModelParams) -> Path | None:
    """The path DVC must hash so that new weights re-run the stages that load them.

    None where the params alone pin the weights: a synthetic preset (its definition,
    presets.py, is already a dependency) and a hub id pinned to a commit (hub snapshots are
    immutable). A local checkpoint: its directory. A hub id at a branch or tag: the repo's
    cache folder, whose refs and snapshots change when ``hf download`` fetches a new commit.
    """
    if params.source != "pretrained":
        return None
    if params.path:
        return Path(params.path).expanduser().resolve()
    if params.hub_id and not is_commit_hash(params.revision):
        return hub_repo_cache(params.hub_id)
    return None


def check_dvc_dependency(params: ModelParams, declared: str | Path | None) -> None:
    """Fail unless the path dvc.yaml hashes (``declared``) covers the weights ``params`` load.

    A checkpoint path that DVC does not hash would let new weights pass unnoticed, with the
    old artifacts reported up to date.
    """
    needed = dvc_dependency(params)
    if needed is None:
        return
    covered = declared is not None and (
        needed == (resolved := Path(declared).expanduser().resolve()) or resolved in needed.parents
    )
    if covered:
        return
    if params.path:
        hint = f"set it to model.path ({params.path})"
    else:
        hint = f"pin model.revision to a commit hash, or set it to the repo's cache folder {needed}"
    raise SourceError(
        f"the DVC weights dependency {str(declared)!r} does not cover the checkpoint {needed}: "
        f"DVC would not notice new weights; {hint}"
    )


__all__ = [
    "PretrainedSource",
    "TensorIndex",
    "check_dvc_dependency",
    "check_omni_config",
    "dvc_dependency",
    "hub_cache_dir",
    "parameters_on_meta",
    "read_config",
    "read_tensors",
    "resolve_hub_snapshot",
]
