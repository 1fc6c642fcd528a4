"""Token2Wav's conditioning: what stays constant through an utterance's ODE solve, once.

codes [B, N] (ids < num_embeds), a reference mel [B, F, 80] and ``cond`` [B, 192] of the
speaker -> the code embedding per mel frame, the ECAPA speaker embedding and ``cond``, each
as 2B rows: the conditioned rows, then classifier-free guidance's null rows.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from omniforge.components.base import Component, DynamicAxes, Inputs, seeded_normal

if TYPE_CHECKING:
    from torch import nn

    from omniforge.sources.base import ModelConfigs, ModelSource

# Where the DiT reads the conditioning graph's outputs: the links the contract checks.
CODE_EMBEDDING, SPEAKER_EMBEDDING, SPEAKER_COND = (
    "dit_code_embedding",
    "dit_speaker_embedding",
    "dit_speaker_cond",
)
# A reference mel shorter than ECAPA's receptive field is refused by its reflect padding.
MIN_REFERENCE_FRAMES = 8


def reference_frames(codes: int) -> int:
    """An example reference mel's length: longer than the utterance, and unlike it."""
    return 3 * codes + MIN_REFERENCE_FRAMES


class Token2WavConditioning(Component):
    name = "token2wav_conditioning"
    # Published inside the token2wav artifact (components/token2wav.py), not alone.
    published = False
    length_name = "codes"
    produces: ClassVar[dict[str, str]] = {
        "code_embed": CODE_EMBEDDING,
        "speaker_embed": SPEAKER_EMBEDDING,
        "speaker_cond": SPEAKER_COND,
    }

    def input_axes(self, configs: ModelConfigs) -> dict[str, DynamicAxes]:
        return {
            "codes": {0: "batch", 1: "codes"},
            "reference_mel": {0: "batch", 1: "reference_frames"},
            "cond": {0: "batch"},
        }

    def output_axes(self, configs: ModelConfigs) -> dict[str, DynamicAxes]:
        # 2 x batch rows and 2 x codes frames: the exporter names those dims itself.
        return {"code_embed": {}, "speaker_embed": {}, "speaker_cond": {}}

    def torch_dynamic_shapes(self, configs: ModelConfigs) -> Any:
        import torch

        batch = torch.export.Dim("batch")
        return {
            "codes": {0: batch, 1: torch.export.Dim("codes")},
            "reference_mel": {
                0: batch,
                1: torch.export.Dim("reference_frames", min=MIN_REFERENCE_FRAMES),
            },
            "cond": {0: batch},
        }

    def extra_files(self, source: ModelSource) -> dict[str, bytes]:
        """The source's speakers and the graphs' limits: what a synthesizer reads with it."""
        from omniforge.runtime.speakers import SPEAKERS_FILENAME, encode_speakers

        return {SPEAKERS_FILENAME: encode_speakers(source.speakers())}

    def exporting(self) -> contextlib.AbstractContextManager[Any]:
        from omniforge.sources.token2wav_graphs import symbolic_ecapa_batch

        return symbolic_ecapa_batch()

    def build_module(self, source: ModelSource) -> nn.Module:
        from omniforge.sources.token2wav_graphs import Conditioning

        return Conditioning(source.token2wav().code2wav_dit_model).eval()

    def make_inputs(self, configs: ModelConfigs, batch: int, length: int, seed: int) -> Inputs:
        dit = configs.token2wav.dit_config
        rng = np.random.default_rng(seed)
        return {
            "codes": rng.integers(0, dit.num_embeds, size=(batch, length), dtype=np.int64),
            # Log-mel magnitudes, around where a real reference mel lies.
            "reference_mel": seeded_normal(seed + 1, (batch, reference_frames(length), dit.mel_dim))
            - 4.0,
            "cond": seeded_normal(seed + 2, (batch, dit.enc_emb_dim)),
        }

    def interface(self, configs: ModelConfigs) -> dict[str, int]:
        dit = configs.token2wav.dit_config
        return {
            "reference_mel": dit.mel_dim,
            "cond": dit.enc_emb_dim,
            "code_embed": dit.emb_dim,
            "speaker_embed": dit.enc_dim,
            "speaker_cond": dit.enc_emb_dim,
        }
