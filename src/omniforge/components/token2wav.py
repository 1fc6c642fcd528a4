"""Token2Wav as one artifact: codec ids to a 24 kHz waveform, the graphs a synthesizer runs.

Its graphs, by role: ``conditioning`` (once per utterance; it carries the speakers),
``dit`` (one ODE evaluation; the host runs the solve) and ``vocoder``. A variant is the
DiT's: quantize schemes rewrite matmuls, and the DiT's are the bulk of the work; the
conditioning and the vocoder (convolutions, which no scheme touches) stay fp32.
"""

from __future__ import annotations

from typing import ClassVar

from omniforge.components.base import Assembly

TOKEN2WAV_KIND = "token2wav"


class Token2Wav(Assembly):
    name = "token2wav"
    graph_kind = TOKEN2WAV_KIND
    parts: ClassVar[dict[str, str]] = {
        "conditioning": "token2wav_conditioning",
        "dit": "token2wav_dit",
        "vocoder": "token2wav_vocoder",
    }
    varied = "dit"
