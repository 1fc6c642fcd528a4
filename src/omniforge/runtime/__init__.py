"""What a voice pipeline imports: numpy and onnxruntime only, never torch.

Published artifacts load only through the verifying loaders (``load_session``,
``load_audio_encoder``, ``load_talker``, ``load_token2wav``): they check every file of the
artifact against its manifest and hand onnxruntime the bytes they hashed. Whisper features
(``log_mel_features``) feed the audio encoder; the talker's KV-cache graph generates codec
ids; Token2Wav turns them into 24 kHz audio.
"""

from omniforge.runtime.audio_encoder import AudioEncoder
from omniforge.runtime.custody import (
    find,
    load_audio_encoder,
    load_session,
    load_talker,
    load_token2wav,
    verify_all,
    verify_artifact,
)
from omniforge.runtime.features import log_mel_features
from omniforge.runtime.generation import GenerationConfig, GenerationResult
from omniforge.runtime.manifest import (
    ArtifactEntry,
    PublishedSet,
    load_manifest,
    read_artifact,
)
from omniforge.runtime.talker import KVCache, OnnxTalker, generate_codes
from omniforge.runtime.token2wav import (
    StreamSettings,
    SynthesisConfig,
    Token2Wav,
    Token2WavStream,
)

__all__ = [
    "ArtifactEntry",
    "AudioEncoder",
    "GenerationConfig",
    "GenerationResult",
    "KVCache",
    "OnnxTalker",
    "PublishedSet",
    "StreamSettings",
    "SynthesisConfig",
    "Token2Wav",
    "Token2WavStream",
    "find",
    "generate_codes",
    "load_audio_encoder",
    "load_manifest",
    "load_session",
    "load_talker",
    "load_token2wav",
    "log_mel_features",
    "read_artifact",
    "verify_all",
    "verify_artifact",
]
