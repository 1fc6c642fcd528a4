"""A local Qwen2.5-Omni checkpoint as a model source: talker, audio tower, Token2Wav, nothing else.

A Qwen2.5-Omni checkpoint is tens of GB of safetensors shards, almost all of it the thinker.
:class:`PretrainedSource` reads ``config.json``, then only the tensors a component needs
(``talker.*``, ``thinker.audio_tower.*``, ``token2wav.*``) from the shards the index names,
memory-mapped, into modules whose parameters were never allocated before. The thinker and
the whole model are never built, so peak memory is about the fp32 size of what is exported.

A hub id is resolved only through the local hub cache: a build never downloads anything.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omniforge.artifacts import FileRecord, sha256_file
from omniforge.errors import SourceError, listing
from omniforge.sources.audio_head import AudioHead
from omniforge.sources.base import ModelConfigs, ModuleT, frozen_fp32
from omniforge.sources.checkpoint_config import CONFIG_NAME, read_config
from omniforge.sources.hub import resolve_hub_snapshot
from omniforge.sources.meta_loading import (
    expected_shapes,
    load_into,
    non_persistent_buffers,
    parameters_on_meta,
)
from omniforge.sources.safetensors_index import TensorIndex, read_tensors
from omniforge.sources.speakers import SPEAKER_DICT, read_speaker_dict
from omniforge.sources.token2wav import CODEC_EMBED_KEYS, Token2WavMetadata, from_config, reconcile

if TYPE_CHECKING:
    from transformers import Qwen2_5OmniTalkerForConditionalGeneration, Qwen2_5OmniToken2WavModel
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniAudioEncoder

    from omniforge.params import ModelParams
    from omniforge.runtime.speakers import SpeakerFile

log = logging.getLogger(__name__)

TALKER_PREFIX = "talker."
TOKEN2WAV_PREFIX = "token2wav."
AUDIO_TOWER_PREFIX = "thinker.audio_tower."
# avg_pooler has no weights: the audio head is these two modules' tensors only.
AUDIO_HEAD_MODULES: tuple[str, ...] = ("ln_post", "proj")
# The DiT code embedding as the whole model stores it: Token2Wav accepts codes below its rows - 1.
CODEC_EMBED_TENSOR = CODEC_EMBED_KEYS[0]


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

        return self._load(
            lambda: Qwen2_5OmniTalkerForConditionalGeneration(self.configs.talker),
            TALKER_PREFIX,
            "talker",
            missing_hint="a thinker-only checkpoint (enable_audio_output false?) "
            "has no talker to export",
        )

    def audio_head(self) -> AudioHead:
        from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import (
            Qwen2_5OmniAudioEncoder,
        )

        def build() -> AudioHead:
            # The tower's own modules, built without its encoder layers: only the tail is needed.
            config = copy.deepcopy(self.configs.audio)
            config.encoder_layers = 0
            tower = Qwen2_5OmniAudioEncoder(config)
            return AudioHead(tower.ln_post, tower.avg_pooler, tower.proj)

        # The rest of the tower's tensors are the audio encoder's: only the head's are checked.
        owned = tuple(f"{AUDIO_TOWER_PREFIX}{name}." for name in AUDIO_HEAD_MODULES)
        return self._load(build, AUDIO_TOWER_PREFIX, "audio head", owned=owned)

    def audio_tower(self) -> Qwen2_5OmniAudioEncoder:
        """The whole tower, from its ``thinker.audio_tower.*`` tensors only."""
        from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import (
            Qwen2_5OmniAudioEncoder,
        )

        return self._load(
            lambda: Qwen2_5OmniAudioEncoder(self.configs.audio), AUDIO_TOWER_PREFIX, "audio encoder"
        )

    def token2wav(self) -> Qwen2_5OmniToken2WavModel:
        from transformers import Qwen2_5OmniToken2WavModel

        return self._load(
            lambda: Qwen2_5OmniToken2WavModel(self.configs.token2wav),
            TOKEN2WAV_PREFIX,
            "Token2Wav",
            missing_hint="a checkpoint without audio output (enable_audio_output false?) "
            "has no Token2Wav to export",
        )

    def _load(
        self,
        build: Callable[[], ModuleT],
        prefix: str,
        what: str,
        *,
        missing_hint: str | None = None,
        owned: tuple[str, ...] | None = None,
    ) -> ModuleT:
        """``build()`` on meta, given its tensors stored under ``prefix``, frozen in fp32.

        ``missing_hint`` says why a checkpoint with nothing under ``prefix`` has no such
        component; it is refused before anything is built. Every tensor stored under
        ``owned`` (default: ``prefix``) must be the module's: an extra one means config and
        weights disagree, e.g. a config with fewer layers than the weights, and loading would
        silently export a truncated model. Stored copies of non-persistent buffers (RoPE
        inv_freq) are harmless.
        """
        if missing_hint is not None and not self.index.names(prefix):
            raise SourceError(f"{self.directory}: no {prefix}* tensors: {missing_hint}")
        with parameters_on_meta():
            module = build()
        expected = expected_shapes(module, prefix)
        ignorable = non_persistent_buffers(module, prefix)
        stored = [name for scope in owned or (prefix,) for name in self.index.names(scope)]
        extra = [n for n in stored if n not in expected and n not in ignorable]
        if extra:
            raise SourceError(
                f"{self.directory}: {what}: tensor {extra[0]} is not part of the model that "
                f"{CONFIG_NAME} describes (unexpected: {listing(extra)})"
            )
        load_into(module, read_tensors(self.index, expected, what), prefix)
        return frozen_fp32(module)

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

    def speakers(self) -> SpeakerFile:
        """The checkpoint's ``spk_dict.pt``, checked against its Token2Wav config."""
        return read_speaker_dict(self.directory / SPEAKER_DICT, self.configs)

    def needed_tensors(self) -> list[str]:
        """Every tensor the components read (by name, as the index holds them)."""
        return [
            *self.index.names(TALKER_PREFIX),
            *self.index.names(TOKEN2WAV_PREFIX),
            *self.index.names(AUDIO_TOWER_PREFIX),
        ]

    def files_read(self) -> list[Path]:
        """config.json, the index and the shards that hold a needed tensor."""
        files = [self.directory / CONFIG_NAME]
        if self.index.index_file is not None:
            files.append(self.index.index_file)
        files += [self.directory / shard for shard in self.index.shards(self.needed_tensors())]
        if (self.directory / SPEAKER_DICT).is_file():
            files.append(self.directory / SPEAKER_DICT)
        return files

    @functools.cached_property
    def _digests(self) -> dict[Path, FileRecord]:
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
            "speakers": (
                asdict(digests[self.directory / SPEAKER_DICT])
                if self.directory / SPEAKER_DICT in digests
                else None
            ),
        }
