"""DVC stage: the voice team's latency table, measured: one spoken question through PyTorch
eager and each chain set of published artifacts; a timeline of the time to first audio and
the replies to listen to."""

import argparse
from pathlib import Path

from omniforge.artifacts import write_json
from omniforge.benchmark.chain import benchmark_chain, render_timeline, write_replies
from omniforge.benchmark.reuse import previous_report
from omniforge.params import Params
from omniforge.stage import run_stage


def main(args: argparse.Namespace, params: Params) -> None:
    report = benchmark_chain(
        params,
        Path(args.published),
        Path(params.chain.question),
        previous_report(Path(args.out)),
        Path(args.listen),
    )
    write_replies(Path(args.listen), report.pop("waveforms"))
    write_json(Path(args.out), report)
    render_timeline(Path(args.timeline), report)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--published", required=True, help="the published set")
    parser.add_argument("--out", required=True, help="metrics JSON to write")
    parser.add_argument("--timeline", required=True, help="time-to-first-audio plot (PNG)")
    parser.add_argument("--listen", required=True, help="folder of replies (WAVs) to write")
    run_stage(main, parser)
