"""DVC stage: publish the variants that pass the gates, with a manifest of hashes and metrics."""

import argparse
from pathlib import Path

from omniforge.artifacts import write_json
from omniforge.params import Params
from omniforge.publish import publish_pipeline
from omniforge.publish.headline import write_headlines
from omniforge.stage import run_stage


def main(args: argparse.Namespace, params: Params) -> None:
    summary, headlines = publish_pipeline(
        params,
        Path(args.variants_root),
        Path(args.exports_root),
        Path(args.validate),
        Path(args.benchmark_root),
        Path(args.out),
    )
    write_json(Path(args.summary), summary)
    write_headlines(Path(args.headlines), headlines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variants-root", required=True)
    parser.add_argument("--exports-root", required=True)
    parser.add_argument("--validate", required=True, help="validate metrics JSON")
    parser.add_argument("--benchmark-root", required=True, help="holds <component>.json")
    parser.add_argument("--out", required=True, help="published root directory")
    parser.add_argument("--summary", required=True, help="publish summary JSON to write")
    parser.add_argument("--headlines", required=True, help="folder of headline metrics to write")
    run_stage(main, parser)
