"""DVC stage: publish the variants that pass the gates, with a manifest of hashes and metrics."""

import argparse
from pathlib import Path

from omniforge.cli import run_stage, variant_dir
from omniforge.components import get_component
from omniforge.onnx_io import SOURCE_FILENAME, read_json, write_json
from omniforge.params import VARIANTS, Params
from omniforge.registry import Candidate, publish


def main(args: argparse.Namespace, params: Params) -> None:
    validation = read_json(Path(args.validate))
    candidates = []
    for name in params.components:
        benchmark = read_json(Path(args.benchmark_root) / f"{name}.json")
        candidates += [
            Candidate(
                component=name,
                variant=variant,
                directory=variant_dir(Path(args.variants_root), name, variant),
                graph_kind=get_component(name).graph_kind,
                parity=validation[name]["variants"][variant],
                benchmark=benchmark[variant],
            )
            for variant in VARIANTS
        ]
    sources = {
        name: read_json(Path(args.exports_root) / name / SOURCE_FILENAME)
        for name in params.components
    }
    manifest = publish(candidates, params.publish.gates, Path(args.out), sources, params.as_dict())
    write_json(
        Path(args.summary),
        {
            "published": len(manifest["artifacts"]),
            "rejected": len(manifest["rejected"]),
            "published_variants": sorted(
                f"{a['component']}-{a['variant']}" for a in manifest["artifacts"]
            ),
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variants-root", required=True)
    parser.add_argument("--exports-root", required=True)
    parser.add_argument("--validate", required=True, help="validate metrics JSON")
    parser.add_argument("--benchmark-root", required=True, help="holds <component>.json")
    parser.add_argument("--out", required=True, help="published root directory")
    parser.add_argument("--summary", required=True, help="publish metrics JSON to write")
    run_stage(main, parser)
