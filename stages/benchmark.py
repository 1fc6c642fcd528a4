"""DVC stage: benchmark every variant of one component beside PyTorch eager."""

import argparse
from pathlib import Path

from omniforge.artifacts import write_json
from omniforge.benchmark.plots import render_latency_png
from omniforge.benchmark.reuse import previous_report
from omniforge.benchmark.run import benchmark_component
from omniforge.params import Params
from omniforge.stage import run_stage


def main(args: argparse.Namespace, params: Params) -> None:
    out = Path(args.out)
    report = benchmark_component(
        params, args.component, Path(args.variants_root), previous_report(out)
    )
    write_json(out, report)
    render_latency_png(Path(args.plot), report, args.component)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--component", required=True)
    parser.add_argument("--variants-root", required=True, help="holds <component>/<variant>/")
    parser.add_argument("--out", required=True, help="metrics JSON to write")
    parser.add_argument("--plot", required=True, help="latency plot (PNG) to write")
    run_stage(main, parser)
