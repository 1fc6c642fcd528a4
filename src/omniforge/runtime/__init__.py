"""What a voice pipeline imports: numpy and onnxruntime only, never torch.

Published artifacts are verified by hash before they load (a whole published set, or one
artifact folder fetched on its own); the talker's KV-cache graph generates codec ids for
Token2Wav.
"""

from omniforge.runtime.generation import GenerationConfig, GenerationResult
from omniforge.runtime.manifest import (
    load_manifest,
    load_session,
    load_talker,
    locate,
    read_artifact,
    verify_all,
    verify_artifact,
    verify_folder,
)
from omniforge.runtime.session import open_session
from omniforge.runtime.talker import KVCache, OnnxTalker, generate_codes

__all__ = [
    "GenerationConfig",
    "GenerationResult",
    "KVCache",
    "OnnxTalker",
    "generate_codes",
    "load_manifest",
    "load_session",
    "load_talker",
    "locate",
    "open_session",
    "read_artifact",
    "verify_all",
    "verify_artifact",
    "verify_folder",
]
