"""DVC stage: export one component from PyTorch to ONNX with external data."""

import argparse
from pathlib import Path

from omniforge.components import get_component
from omniforge.params import Params
from omniforge.passes.export import export_component
from omniforge.sources import open_source
from omniforge.stage import run_stage


def main(args: argparse.Namespace, params: Params) -> None:
    component = get_component(args.component)
    export_component(component, open_source(params.model), Path(args.out), params.export)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--component", required=True)
    parser.add_argument("--out", required=True, help="artifact directory to write")
    run_stage(main, parser)
