"""The ``omniforge`` command line: look at models, verify them, read the figures, release.

omniforge inventory DIR       every .onnx under DIR: true size, data files, I/O, pipeline link
omniforge verify DIR          a published set or one artifact folder, against its hashes
omniforge show [DIR]          the headline figures of the published variants, where and when
                              they were measured
omniforge compare A B         two published variants side by side, with ratios
omniforge synthesize C OUT    codes to a 24 kHz WAV through a published Token2Wav, timed
omniforge chain IN OUT        speech in, speech out through the published links, timed per link
omniforge release             declare, version-tag and push the published artifacts
omniforge clean               remove temporaries left by killed runs
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from omniforge.artifacts import read_json, read_json_object
from omniforge.benchmark.reuse import MEASURED_AT, MEASURED_ON
from omniforge.errors import OmniforgeError
from omniforge.runtime.custody import verify_all, verify_artifact
from omniforge.runtime.manifest import MANIFEST_FILENAME, ArtifactEntry, load_manifest

app = typer.Typer(
    help="Vetted ONNX artifacts of the Qwen2.5-Omni speech pipeline: inspect, verify, release.",
    no_args_is_help=True,
    add_completion=False,
)
# Wide enough for the inventory's five columns when output is piped (rich defaults to 80).
console = Console(width=max(Console().width, 140))
PUBLISHED = Path("models/published")


def _fail(err: Exception) -> None:
    console.print(f"[red]error:[/red] {escape(str(err))}")
    raise typer.Exit(code=1)


Command = TypeVar("Command", bound=Callable[..., None])


def command(function: Command) -> Command:
    """A subcommand that reports what a user can cause (a named omniforge error, a file the
    machine refuses) as one line and exit 1, never as a traceback."""
    from omniforge.workspace import explain_os_error

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            function(*args, **kwargs)
        except OmniforgeError as err:
            _fail(err)
        except OSError as err:
            _fail(explain_os_error(err) or OmniforgeError(f"{err.filename or ''}: {err.strerror}"))

    app.command()(guarded)
    return function


def _folder(directory: Path) -> Path:
    if not directory.exists():
        raise OmniforgeError(f"{directory}: no such file or folder")
    if not directory.is_dir():
        raise OmniforgeError(f"{directory}: not a folder")
    return directory


def _megabytes(value: int | None) -> str:
    """Bytes for a person: B, kB, MB or GB (decimal units, as `ls -h --si`)."""
    if value is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:,.1f} {unit}"
    return f"{value} B"


@command
def inventory(
    directory: Annotated[Path, typer.Argument(help="folder to search for .onnx files")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    token2wav_num_embeds: Annotated[
        int, typer.Option(help="codes Token2Wav takes (its num_embeds)")
    ] = 8193,
) -> None:
    """Every ONNX model under DIRECTORY with its true size (graph + external data), the
    data files it needs and whether they are there and whole, its inputs and outputs, and
    which link of the voice chain it can fill (audio encoder → projection → talker → Token2Wav
    conditioning, DiT, vocoder), told by its shapes, never its I/O names."""
    from omniforge.inventory import inventory as take_inventory

    reports = take_inventory(_folder(directory), token2wav_num_embeds)
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in reports], indent=2))
    else:
        console.print(inventory_table(directory, reports))
    if any(not r.ok for r in reports):
        raise typer.Exit(code=1)


def inventory_table(directory: Path, reports: list[Any]) -> Table:
    from omniforge.inventory import io_summary

    table = Table(title=f"ONNX models under {directory}", show_lines=True)
    table.add_column("model", overflow="fold")
    table.add_column("size with data", justify="right")
    table.add_column("files")
    table.add_column("inputs → outputs", overflow="fold")
    table.add_column("fills")
    for report in reports:
        files = [f"graph {_megabytes(report.graph_bytes)}"]
        for data in report.external:
            if data.bytes_on_disk is None:
                state = "[red]missing[/red]"
            elif not data.complete:
                state = f"[red]truncated ({_megabytes(data.bytes_on_disk)} of "
                state += f"{_megabytes(data.needed_bytes)})[/red]"
            else:
                state = _megabytes(data.bytes_on_disk)
            files.append(f"{data.location}: {state}")
        io = escape("\n".join([*io_summary(report.inputs), "→", *io_summary(report.outputs)]))
        link = escape("\n".join([report.role, *report.fits]))
        if report.problems:
            link += "\n" + "\n".join(f"[red]✗ {escape(p)}[/red]" for p in report.problems)
        table.add_row(report.path, _megabytes(report.total_bytes), "\n".join(files), io, link)
    return table


@command
def verify(
    directory: Annotated[Path, typer.Argument(help="a published set, or one artifact folder")],
) -> None:
    """Check every file against the sha256 its manifest records; exit 1 on any difference."""
    manifest = read_json(_folder(directory) / MANIFEST_FILENAME)
    if isinstance(manifest, dict) and "artifact" in manifest:
        checked = [verify_artifact(directory)]
    else:
        checked = verify_all(directory)
    for name in checked:
        console.print(f"[green]✓[/green] {name}")
    console.print(f"{len(checked)} artifact(s) verified in {directory}")


def _rows(manifest: Any) -> list[tuple[str, dict[str, Any]]]:
    rows = [(a.name, a.metrics.headline) for a in manifest.artifacts]
    rows += [
        (f"{r.component}/{r.variant}", {"published": False, "refused_by": ", ".join(r.refused_by)})
        for r in manifest.rejected
    ]
    return sorted(rows, key=lambda row: row[0])


# Where and when an artifact's figures were timed. Not headline fields: metrics/headline is
# what `dvc metrics show` prints, and it prints strings too (a CPU name and a timestamp would
# widen every row of that screen). The manifest already carries each artifact's benchmark
# figures whole (metrics.benchmark), measured_at among them, so show reads them from there.
# The CPU is read from the figures too (``measured_on``): only the run that timed them can
# say it; publish, which may run elsewhere on committed figures, cannot.


def _measured(benchmark: dict[str, Any]) -> dict[str, str]:
    """``measured_at`` (the date) and ``measured_on`` (the CPU) of one artifact's benchmark
    figures, each only if they record it."""
    found = {}
    when = benchmark.get(MEASURED_AT)
    # The date (the time of day tells a reader nothing); absent (older figures, an
    # assembly's) or not a time: not on record.
    with contextlib.suppress(TypeError, ValueError):
        found[MEASURED_AT] = datetime.fromisoformat(when).date().isoformat()
    cpu = benchmark.get(MEASURED_ON)
    if isinstance(cpu, str) and cpu.strip():
        found[MEASURED_ON] = cpu.strip()
    return found


def _names(names: list[str], every: list[str]) -> str:
    """``names`` for a reader: ``component/*`` for every artifact of a component."""
    components = sorted({name.partition("/")[0] for name in names})
    parts = []
    for component in components:
        mine = [name for name in names if name.partition("/")[0] == component]
        whole = len(mine) == sum(name.partition("/")[0] == component for name in every)
        parts += [f"{component}/*"] if whole and len(mine) > 1 else mine
    return escape(", ".join(parts))


def measured_lines(measured: dict[str, dict[str, str]], here: str) -> list[str]:
    """Under the tables: on which CPU and when each artifact's figures were measured (from
    ``measured``: artifact -> what its figures record), and a plain warning when that is not
    this machine (``here``: its CPU model) or cannot be told."""
    if not any(measured.values()):
        return ["where and when these figures were measured is not on record"]
    every = list(measured)
    dates = sorted({m[MEASURED_AT] for m in measured.values() if MEASURED_AT in m})
    cpus = sorted({m[MEASURED_ON] for m in measured.values() if MEASURED_ON in m})
    where = f"on {escape('; '.join(cpus))}" if cpus else "on a CPU not on record"
    if not dates:
        when = "; when is not on record"
    elif len(dates) == 1:
        when = f", {dates[0]}"
    else:
        when = f", between {dates[0]} and {dates[-1]}"
    lines = [f"figures measured {where}{when}"]
    nowhere = [name for name, m in measured.items() if MEASURED_ON not in m]
    if nowhere and cpus:
        lines.append(f"not on record: on which CPU {_names(nowhere, every)} were measured")
    never = [name for name, m in measured.items() if MEASURED_AT not in m]
    if never and dates:
        lines.append(f"not on record: when {_names(never, every)} were measured")
    here_name = escape(here) if here else "a CPU this omniforge cannot read"
    elsewhere = [cpu for cpu in cpus if cpu != here]
    if elsewhere:
        lines.append(
            f"[bold yellow]not this machine:[/bold yellow] measured on "
            f"{escape('; '.join(elsewhere))}, this machine is {here_name}: its timings will differ"
        )
    elif nowhere or not here:
        lines.append(
            f"[yellow]maybe not this machine[/yellow] ({here_name}): figures with no CPU on "
            "record may come from another one"
        )
    return lines


def _figures_table(title: str, rows: list[tuple[str, dict[str, Any]]], keys: list[str]) -> Table:
    table = Table(title=title)
    # A name cut short names nothing: folded, never cut (the layout leaves it room to be whole).
    table.add_column("artifact", overflow="fold")
    for key in keys:
        table.add_column(key.replace("_", "\n"), justify="right", no_wrap=True)
    for name, figures in rows:
        table.add_row(escape(name), *(escape(str(figures.get(key, "-"))) for key in keys))
    return table


def figure_tables(
    screen: Console, title: str, rows: list[tuple[str, dict[str, Any]]], keys: list[str]
) -> list[Table]:
    """The headline as tables that fit ``screen``: the figure columns in order, as many per
    table as fit beside the artifact column, which every table repeats. A part leaves out the
    artifacts with none of its figures."""
    from rich.measure import Measurement

    unbounded = screen.options.update_width(1 << 16)

    def width(part: list[str]) -> int:
        return Measurement.get(screen, unbounded, _figures_table(title, rows, part)).maximum

    parts: list[list[str]] = []
    for key in keys:
        if parts and width([*parts[-1], key]) <= screen.width:
            parts[-1].append(key)
        else:
            parts.append([key])
    if len(parts) <= 1:
        return [_figures_table(title, rows, keys)]
    tables = []
    for number, part in enumerate(parts, 1):
        shown = [(name, f) for name, f in rows if any(key in f for key in part)]
        table = _figures_table(f"{title} ({number} of {len(parts)})", shown, part)
        if len(shown) < len(rows):
            table.caption = f"{len(rows) - len(shown)} artifacts have none of these figures"
        tables.append(table)
    return tables


@command
def show(
    directory: Annotated[Path, typer.Argument(help="a published set")] = PUBLISHED,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The headline figures of every published variant (and what was refused), one row each;
    on which CPU and when they were measured."""
    from omniforge.benchmark import reuse
    from omniforge.publish.headline import HEADLINE_KEYS

    manifest = load_manifest(_folder(directory))
    rows = _rows(manifest)
    measured = {a.name: _measured(a.metrics.benchmark) for a in manifest.artifacts}
    if as_json:
        with_measured = {name: figures | measured.get(name, {}) for name, figures in rows}
        typer.echo(json.dumps(with_measured, indent=2))
        return
    # This terminal's width (or COLUMNS; 80 when piped), not the inventory's 140 at least.
    screen = Console()
    keys = [k for k in HEADLINE_KEYS if any(k in figures for _, figures in rows)]
    for table in figure_tables(screen, f"published in {escape(str(directory))}", rows, keys):
        screen.print(table)
    for line in measured_lines(measured, reuse.machine()["cpu"]):
        screen.print(line)
    summary = Path("metrics/publish.json")
    if directory == PUBLISHED and summary.is_file():
        fastest = read_json_object(summary).get("fastest")
        for job, name in (fastest if isinstance(fastest, dict) else {}).items():
            screen.print(f"fastest {escape(str(job))}: [bold]{escape(str(name))}[/bold]")


def _published(manifest: Any, name: str) -> ArtifactEntry:
    component, slash, variant = name.partition("/")
    if not slash or not component or not variant:
        raise OmniforgeError(f"{name!r}: name a published variant as component/variant")
    return manifest.find(component, variant)


@command
def compare(
    first: Annotated[str, typer.Argument(help="component/variant, e.g. talker_kv/int4")],
    second: Annotated[str, typer.Argument(help="component/variant, e.g. talker_fused/int4")],
    directory: Annotated[Path, typer.Option(help="the published set")] = PUBLISHED,
) -> None:
    """Two published variants side by side: each headline figure and their ratio."""
    from omniforge.publish.headline import HEADLINE_KEYS, headline

    manifest = load_manifest(_folder(directory))
    entries = [_published(manifest, name) for name in (first, second)]
    try:
        figures = [headline(e.metrics.parity, e.metrics.benchmark, True, []) for e in entries]
    except (TypeError, ValueError, AttributeError) as err:  # figures of the wrong type
        raise OmniforgeError(
            f"{directory / MANIFEST_FILENAME}: unreadable figures: {err}"
        ) from None
    table = Table(title=f"{first} vs {second}")
    for column in ("figure", first, second, f"{first} ÷ {second}"):
        table.add_column(column, justify="right")
    for key in HEADLINE_KEYS:
        a, b = figures[0].get(key), figures[1].get(key)
        if a is None and b is None:
            continue
        ratio = "-"
        if (
            isinstance(a, int | float)
            and isinstance(b, int | float)
            and b
            and not isinstance(a, bool)
        ):
            ratio = f"{a / b:.2f}×"
        table.add_row(
            key, str(a if a is not None else "-"), str(b if b is not None else "-"), ratio
        )
    console.print(table)


@command
def synthesize(
    codes: Annotated[Path, typer.Argument(help="codes: .npy or .json, [N] or [1, N]")],
    out: Annotated[Path, typer.Argument(help="the WAV to write (24 kHz mono)")],
    artifact: Annotated[Path, typer.Option(help="the published set")] = PUBLISHED,
    variant: Annotated[str, typer.Option(help="the published token2wav variant")] = "fp32",
    speaker: Annotated[str | None, typer.Option(help="a voice of the artifact")] = None,
    stream: Annotated[bool, typer.Option("--stream", help="chunk by chunk, as codes come")] = False,
    steps: Annotated[int, typer.Option(help="ODE time points (DiT runs: 4 per interval)")] = 10,
    guidance: Annotated[float, typer.Option(help="classifier-free guidance; 0: none")] = 0.5,
    seed: Annotated[int | None, typer.Option(help="seed of the noise (default 0)")] = None,
    noise: Annotated[
        Path | None, typer.Option(help=".npy noise [2N, 80] or [1, 2N, 80], instead of a seed")
    ] = None,
    pcm16: Annotated[bool, typer.Option("--pcm16", help="16-bit PCM, not 32-bit float")] = False,
    threads: Annotated[int | None, typer.Option(help="onnxruntime threads")] = None,
) -> None:
    """Turn codec ids (the talker's, control ids stripped) into speech through a published,
    verified Token2Wav; print the real-time factor and the time to the first audio."""
    from omniforge.runtime import load_token2wav
    from omniforge.runtime.speak import read_codes, read_noise, speak
    from omniforge.runtime.token2wav import SAMPLE_RATE, StreamSettings, SynthesisConfig
    from omniforge.runtime.wav import write_wav

    if seed is not None and noise is not None:
        raise OmniforgeError("give --seed or --noise, not both")
    read = read_codes(codes)
    try:
        config = SynthesisConfig(num_steps=steps, guidance_scale=guidance, seed=seed or 0)
        t2w = load_token2wav(_folder(artifact), variant, threads)
        given = None if noise is None else read_noise(noise, read.shape[1], t2w.mel_dim)
        spoken = speak(t2w, read, speaker, config, given, StreamSettings() if stream else None)
        write_wav(out, spoken.waveform, SAMPLE_RATE, pcm16)
    except ValueError as err:  # a bad setting, code or speaker, named by the runtime
        raise OmniforgeError(str(err)) from None
    how = f"streamed in {spoken.chunks} chunks" if stream else "offline"
    console.print(
        f"wrote {escape(str(out))}: {spoken.audio_seconds:.2f} s at {SAMPLE_RATE} Hz "
        f"({'16-bit PCM' if pcm16 else '32-bit float'}), voice "
        f"{escape(speaker or t2w.default_speaker)}, {steps} time points, guidance {guidance:g}, "
        f"{how}\n"
        f"synthesis {spoken.seconds:.2f} s: real-time factor {spoken.real_time_factor:.2f}, "
        f"first audio {spoken.first_audio_seconds:.2f} s after the first code"
    )


@command
def chain(
    wav: Annotated[Path, typer.Argument(help="the question: a mono WAV (resampled to 16 kHz)")],
    out: Annotated[Path, typer.Argument(help="the reply to write (24 kHz mono WAV)")],
    artifact: Annotated[Path, typer.Option(help="the published set")] = PUBLISHED,
    encoder: Annotated[str | None, typer.Option(help="audio_encoder/<variant>")] = None,
    projection: Annotated[str | None, typer.Option(help="projection/<variant>")] = None,
    talker: Annotated[
        str | None, typer.Option(help="a KV talker, e.g. talker_fused/hybrid")
    ] = None,
    token2wav: Annotated[str | None, typer.Option(help="token2wav/<variant>")] = None,
    speaker: Annotated[str | None, typer.Option(help="a voice of the Token2Wav")] = None,
    max_codes: Annotated[
        int | None, typer.Option(help="cap on the reply's codes (default: as long as the input)")
    ] = None,
    steps: Annotated[int, typer.Option(help="ODE time points (DiT runs: 4 per interval)")] = 10,
    guidance: Annotated[float, typer.Option(help="classifier-free guidance; 0: none")] = 0.5,
    seed: Annotated[int, typer.Option(help="seed of Token2Wav's noise")] = 0,
    max_seconds: Annotated[float, typer.Option(help="the longest input taken")] = 30.0,
    pcm16: Annotated[bool, typer.Option("--pcm16", help="16-bit PCM, not 32-bit float")] = False,
    threads: Annotated[int | None, typer.Option(help="onnxruntime threads")] = None,
) -> None:
    """Speech in, speech out through published, verified links (no LLM: the question's
    projected states feed the talker): write the reply and print where the time went."""
    from omniforge.runtime.features import SAMPLE_RATE as INPUT_RATE
    from omniforge.runtime.token2wav import SAMPLE_RATE, SynthesisConfig
    from omniforge.runtime.voice import VoicePipeline
    from omniforge.runtime.wav import read_voice_input, write_wav

    given = {"encoder": encoder, "projection": projection, "talker": talker, "token2wav": token2wav}
    names = {link: name for link, name in given.items() if name}
    waveform = read_voice_input(wav, max_seconds=max_seconds)
    try:
        synthesis = SynthesisConfig(num_steps=steps, guidance_scale=guidance, seed=seed)
        pipeline = VoicePipeline.load(_folder(artifact), names, threads)
        reply = pipeline.reply(waveform, speaker=speaker, max_codes=max_codes, synthesis=synthesis)
    except ValueError as err:  # a bad setting, name or speaker, named by the runtime
        raise OmniforgeError(str(err)) from None
    if not reply.chunks:
        raise OmniforgeError("the talker stopped before its first code: no audio to write")
    write_wav(out, reply.waveform, SAMPLE_RATE, pcm16)
    console.print(chain_table(pipeline.names, reply, waveform.size / INPUT_RATE))
    console.print(
        f"wrote {escape(str(out))}: {reply.audio_seconds:.2f} s at {SAMPLE_RATE} Hz, "
        f"{reply.codes.size} codes, {len(reply.chunks)} chunks"
    )


def chain_table(names: dict[str, str], reply: Any, input_seconds: float) -> Table:
    """One turn's time, link by link: what the voice team's latency table holds."""
    times = reply.times
    chunk_ms = sorted(times.token2wav_chunk_ms)
    table = Table(title=f"one turn: {input_seconds:.2f} s in, {reply.audio_seconds:.2f} s out")
    table.add_column("link", no_wrap=True)
    table.add_column("artifact", no_wrap=True)
    table.add_column("ms", justify="right")
    table.add_column("what", overflow="fold")
    rows = [
        ("features", "numpy", times.features_ms, "Whisper log-mel of the input"),
        ("encoder", names.get("encoder", "-"), times.encoder_ms, "every 2 s chunk"),
        ("projection", names.get("projection", "-"), times.projection_ms, "once"),
        ("talker", names.get("talker", "-"), times.talker_first_code_ms, "prompt to first code"),
        ("talker", "", times.talker_per_code_ms, "per code after it (median)"),
        (
            "token2wav",
            names.get("token2wav", "-"),
            chunk_ms[len(chunk_ms) // 2] if chunk_ms else 0.0,
            f"per chunk (median of {len(chunk_ms)})",
        ),
        ("first audio", "", times.first_audio_ms, "from the end of the input"),
        ("total", "", times.total_ms, f"real-time factor {reply.real_time_factor:.2f}"),
    ]
    for link, name, ms, what in rows:
        table.add_row(link, escape(name), f"{ms:,.1f}", what)
    return table


@command
def release(
    bump: Annotated[str, typer.Option(help="version part to bump for changed artifacts")] = "minor",
    push: Annotated[bool, typer.Option(help="push the outputs to the default DVC remote")] = True,
) -> None:
    """Declare the published artifacts in dvc.yaml, tag new versions, push to the remote."""
    from omniforge.release import release as run_release

    releases = run_release(Path(), bump, push)
    for item in releases:
        state = f"[green]{item.version}[/green]" if item.version else "unchanged"
        console.print(f"{item.name}: {state}")
    console.print("share them: `git push --follow-tags` (and `dvc push` to a team remote)")


@command
def clean() -> None:
    """Remove temporaries (``.<name>.tmp-<pid>-*``) of runs that were killed, and private
    copies of graphs left in /dev/shm or the temporary directory by killed loads."""
    import tempfile

    from omniforge.runtime.custody import SHARED_MEMORY, sweep_private_copies
    from omniforge.workspace import sweep_stale_temporaries

    removed = sweep_stale_temporaries()
    for folder in {Path(SHARED_MEMORY), Path(tempfile.gettempdir())}:
        if folder.is_dir():
            removed += sweep_private_copies(folder)
    for path in removed:
        console.print(f"removed {path}")
    console.print(f"{len(removed)} temporaries removed")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    app()
