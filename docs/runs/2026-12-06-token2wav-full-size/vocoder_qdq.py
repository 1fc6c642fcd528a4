"""Static QDQ int8 for the full-size vocoder, tried and not adopted: calibrated on mels the
DiT solves, timed beside the fp32 graph in one process, judged against its audio.

    .venv/bin/python docs/runs/2026-12-06-token2wav-full-size/vocoder_qdq.py WORK

WORK is run.py's folder (its fp32 vocoder, int8 DiT and conditioning); the mels and the two
quantized graphs go to WORK/qdq. Calibration holds every activation of four 2 s mels: ~8 GB.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from omniforge.artifacts import atomic_directory
from omniforge.runtime.token2wav import SynthesisConfig, open_unverified_token2wav
from omniforge.validate.audio import audio_distance

CALIBRATION = 4  # mels at the `fast` setting; one more at transformers' defaults is the test


def mels(work: Path, out: Path) -> list[np.ndarray]:
    variants = work / "variants"
    token2wav = open_unverified_token2wav(
        {
            "conditioning": variants / "token2wav_conditioning" / "fp32",
            "dit": variants / "token2wav_dit" / "int8",
            "vocoder": variants / "token2wav_vocoder" / "fp32",
        },
        threads=2,
    )
    codes = np.random.default_rng(7).integers(0, 8000, size=(CALIBRATION + 1, 1, 100))
    solved = []
    for i, utterance in enumerate(codes):
        path = out / f"mel{i}.npy"
        if not path.exists():  # written whole or not at all, so a file here is finished
            fast = SynthesisConfig(num_steps=5, guidance_scale=0.0, seed=i)
            config = fast if i < CALIBRATION else SynthesisConfig(seed=i)
            partial = out / f".mel{i}.partial.npy"
            np.save(partial, token2wav.mel(utterance, config=config))
            partial.replace(path)
        solved.append(np.load(path))
    return solved


class Reader(CalibrationDataReader):
    def __init__(self, calibration: list[np.ndarray]) -> None:
        self.feeds = iter({"mel": mel} for mel in calibration)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def main(work: Path) -> None:
    out = work / "qdq"
    out.mkdir(exist_ok=True)
    solved = mels(work, out)
    fp32 = work / "variants" / "token2wav_vocoder" / "fp32" / "model.onnx"
    graph = onnx.load(str(fp32), load_external_data=False)
    depthwise = [
        node.name
        for node in graph.graph.node
        if node.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in node.attribute)
    ]
    # Every convolution, or the dense ones only (the anti-aliasing filters kept in fp32).
    graphs = {"fp32": fp32}
    for name, excluded in (("all", []), ("dense", depthwise)):
        target = out / name / "model.onnx"
        if not target.exists():  # the folder appears whole, so a graph here is finished
            with atomic_directory(out / name) as partial:
                quantize_static(
                    str(fp32),
                    str(partial / "model.onnx"),
                    Reader(solved[:CALIBRATION]),
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["Conv"],
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=excluded,
                    calibrate_method=CalibrationMethod.MinMax,
                    use_external_data_format=True,
                )
        graphs[name] = target
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    sessions = {name: ort.InferenceSession(str(path), options) for name, path in graphs.items()}
    feeds = {"mel": solved[CALIBRATION]}
    audio = {name: session.run(None, feeds)[0][0, 0] for name, session in sessions.items()}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(5):  # alternating, so a busy moment of the host hits every graph alike
        for name, session in sessions.items():
            started = time.perf_counter()
            session.run(None, feeds)
            times[name].append(time.perf_counter() - started)
    reference = float(np.median(times["fp32"]))
    for name in sessions:
        median = float(np.median(times[name]))
        quality = audio_distance(audio["fp32"], audio[name]) if name != "fp32" else {}
        print(f"{name}: {1000 * median:.0f} ms, {reference / median:.2f}x fp32, {quality}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
