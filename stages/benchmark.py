"""DVC stage: benchmark every variant of one component beside PyTorch eager."""

import argparse
from pathlib import Path

from omniforge.bench import TimingPlan, benchmark_component, plot_rows, write_latency_csv
from omniforge.cli import run_stage
from omniforge.onnx_io import variant_dir, write_json
from omniforge.params import VARIANTS, Params


def main(args: argparse.Namespace, params: Params) -> None:
    # torch comes in here, not at import: the benchmark's spawned onnxruntime children
    # re-import this module, and their peak RSS must not include torch.
    from omniforge.components import get_component
    from omniforge.sources import open_source

    settings = params.benchmark
    component = get_component(args.component).configure_from(params)
    configs = open_source(params.model).configs
    cases = component.benchmark_cases(
        configs, settings.batch, settings.lengths[component.name], seed=params.validate_.seed
    )
    variant_dirs = {v: variant_dir(Path(args.variants_root), component.name, v) for v in VARIANTS}
    report = benchmark_component(
        component.name,
        params.as_dict(),
        variant_dirs,
        cases,
        TimingPlan(settings.threads, settings.warmup, settings.iterations, settings.load_repeats),
        settings.batch,
        settings.compare_torch,
        emits_codes=component.emits_codes,
    )
    rows = plot_rows(report, cases, component.length_name)
    write_json(Path(args.out), report)
    write_latency_csv(Path(args.plot), rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--component", required=True)
    parser.add_argument("--variants-root", required=True, help="holds <component>-<variant>/")
    parser.add_argument("--out", required=True, help="metrics JSON to write")
    parser.add_argument("--plot", required=True, help="latency CSV to write")
    run_stage(main, parser)
