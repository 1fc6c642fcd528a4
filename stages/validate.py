"""DVC stage: check the shape contract and the parity of every variant of every component."""

import argparse
from pathlib import Path

from omniforge.cli import run_stage, variant_dir
from omniforge.components import get_component
from omniforge.onnx_io import write_json
from omniforge.params import VARIANTS, Params
from omniforge.sources import open_source
from omniforge.token2wav import resolve_metadata
from omniforge.validate import validate_component


def main(args: argparse.Namespace, params: Params) -> None:
    source = open_source(params.model)
    token2wav = resolve_metadata(source.token2wav_metadata(), params.token2wav.metadata)
    root = Path(args.variants_root)
    fp32_dirs = {name: variant_dir(root, name, "fp32") for name in params.components}
    report = {"token2wav": token2wav.as_dict()}
    for name in params.components:
        report[name] = validate_component(
            get_component(name).configure_from(params),
            source,
            {variant: variant_dir(root, name, variant) for variant in VARIANTS},
            {peer: path for peer, path in fp32_dirs.items() if peer != name},
            token2wav,
            params.validate_.shapes[name],
            params.validate_.seed,
        )
    write_json(Path(args.out), report)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variants-root", required=True, help="holds <component>-<variant>/")
    parser.add_argument("--out", required=True, help="metrics JSON to write")
    run_stage(main, parser)
