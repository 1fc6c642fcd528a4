"""DVC stage: quantize the fp32 variant of a component with one scheme (int8, int4)."""

import argparse
from pathlib import Path

from omniforge.params import Params
from omniforge.passes.quantize import quantize_artifact
from omniforge.stage import run_stage


def main(args: argparse.Namespace, params: Params) -> None:
    quantize_artifact(Path(args.src), Path(args.out), args.scheme, params.quantize)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scheme", required=True)
    parser.add_argument("--src", required=True, help="fp32 artifact directory")
    parser.add_argument("--out", required=True, help="quantized artifact directory to write")
    run_stage(main, parser)
