"""DVC stage: publish the variants that pass the gates, with a manifest of hashes and metrics."""

import argparse
from pathlib import Path

from omniforge.cli import run_stage
from omniforge.onnx_io import SOURCE_FILENAME, read_json, write_json
from omniforge.params import Params
from omniforge.registry import collect_candidates, publish, summary


def main(args: argparse.Namespace, params: Params) -> None:
    candidates = collect_candidates(
        params.components,
        Path(args.variants_root),
        read_json(Path(args.validate)),
        Path(args.benchmark_root),
    )
    sources = {
        name: read_json(Path(args.exports_root) / name / SOURCE_FILENAME)
        for name in params.components
    }
    manifest = publish(candidates, params.publish.gates, Path(args.out), sources, params.as_dict())
    write_json(Path(args.summary), summary(manifest))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variants-root", required=True)
    parser.add_argument("--exports-root", required=True)
    parser.add_argument("--validate", required=True, help="validate metrics JSON")
    parser.add_argument("--benchmark-root", required=True, help="holds <component>.json")
    parser.add_argument("--out", required=True, help="published root directory")
    parser.add_argument("--summary", required=True, help="publish metrics JSON to write")
    run_stage(main, parser)
