"""DVC stage: time every variant of an assembly (Token2Wav) as whole syntheses beside
PyTorch eager; WAVs to listen to, chunk latencies and spectrograms plotted."""

import argparse
from pathlib import Path

from omniforge.artifacts import write_json
from omniforge.benchmark.plots import render_latency_png
from omniforge.benchmark.reuse import previous_report
from omniforge.benchmark.synthesis import benchmark_token2wav, render_spectrograms
from omniforge.params import Params
from omniforge.stage import run_stage


def main(args: argparse.Namespace, params: Params) -> None:
    report = benchmark_token2wav(
        params,
        args.assembly,
        Path(args.variants_root),
        Path(args.listen),
        previous_report(Path(args.out)),
    )
    spectrograms = report.pop("spectrograms")
    write_json(Path(args.out), report)
    render_latency_png(Path(args.plot), report, f"{args.assembly} stream")
    render_spectrograms(Path(args.spectrogram), spectrograms, f"{args.assembly}: one utterance")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--assembly", required=True)
    parser.add_argument("--variants-root", required=True, help="holds <component>/<variant>/")
    parser.add_argument("--out", required=True, help="metrics JSON to write")
    parser.add_argument("--plot", required=True, help="chunk latency plot (PNG) to write")
    parser.add_argument("--spectrogram", required=True, help="mel spectrograms (PNG) to write")
    parser.add_argument("--listen", required=True, help="folder of WAVs to write")
    run_stage(main, parser)
