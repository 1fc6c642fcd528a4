"""What ONNX models a folder holds, judged by their files and their graphs, not their names.

For every ``.onnx`` under a folder: its true size (the graph plus every external-data file
it references), whether each of those files is present and long enough, its inputs and
outputs, and which link of the voice chain it can fill (audio encoder → projection → talker
→ Token2Wav conditioning → DiT → vocoder), checked against the other models in the folder by
the shape contract. A link is recognised by its shapes (rank, dtype, which dims are symbolic
and which are fixed), never by its input and output names: other exporters name them
otherwise. Reading a graph never loads its weights.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omniforge.talker_io import CONTROL_IDS, TOKEN2WAV_NUM_EMBEDS

AUDIO_ENCODER, PROJECTION = "audio encoder", "projection"
TALKER, TALKER_KV, TALKER_FUSED = "talker", "talker (KV cache)", "talker (fused KV cache)"
CONDITIONING, DIT, VOCODER = "Token2Wav conditioning", "Token2Wav DiT", "vocoder"
UNKNOWN = "unknown"
TALKERS = (TALKER, TALKER_KV, TALKER_FUSED)

FLOATS = frozenset({"float16", "float32", "float64", "bfloat16"})
INTEGERS = frozenset({"int32", "int64"})


@dataclass
class ExternalFile:
    location: str
    needed_bytes: int  # the end of the last tensor stored in it
    bytes_on_disk: int | None  # None: missing

    @property
    def complete(self) -> bool:
        return self.bytes_on_disk is not None and self.bytes_on_disk >= self.needed_bytes


@dataclass
class ModelReport:
    path: str
    graph_bytes: int
    external: list[ExternalFile]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    role: str = UNKNOWN
    input_width: int | None = None
    # The widths its links are judged by (None: not fixed in the graph): an audio encoder's
    # mel bins and d_model, a projection's or talker's input and output (a talker's output
    # is its vocabulary), a conditioning's reference mel and code embedding, a DiT's mel
    # (in and out), a vocoder's mel (in only).
    output_width: int | None = None
    fits: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def total_bytes(self) -> int:
        return self.graph_bytes + sum(f.bytes_on_disk or 0 for f in self.external)

    @property
    def ok(self) -> bool:
        return not self.problems and self.error is None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["total_bytes"] = self.total_bytes
        out["ok"] = self.ok
        for item, external in zip(out["external"], self.external, strict=True):
            item["present"] = external.bytes_on_disk is not None
            item["complete"] = external.complete
        return out


Value = dict[str, Any]


def _is(value: Value, dtypes: frozenset[str], pattern: str) -> bool:
    """``value`` has one of ``dtypes`` and one dim per letter of ``pattern``: ``S`` a
    symbolic (or unknown) dim, ``F`` a fixed one, a digit exactly that size, ``*`` any."""
    shape = value["shape"]
    if value["dtype"] not in dtypes or len(shape) != len(pattern):
        return False
    for dim, want in zip(shape, pattern, strict=True):
        fixed = isinstance(dim, int) and dim > 0
        if (want == "S" and fixed) or (want == "F" and not fixed):
            return False
        if want.isdigit() and dim != int(want):
            return False
    return True


def _width(value: Value) -> int:
    return int(value["shape"][-1])


def _audio_encoder(ins: list[Value], outs: list[Value]) -> tuple[int, int] | None:
    """Mel features channels-first [chunks, mel_bins, frames] (+ integer lengths) → hidden
    states [chunks, positions, d_model]: (mel_bins, d_model)."""
    mels = [v for v in ins if _is(v, FLOATS, "*FS")]
    others = [v for v in ins if v not in mels]
    if len(mels) != 1 or any(v["dtype"] not in INTEGERS for v in others):
        return None
    if len(outs) != 1 or not _is(outs[0], FLOATS, "*SF"):
        return None
    return mels[0]["shape"][1], _width(outs[0])


def _vocoder(ins: list[Value], outs: list[Value]) -> int | None:
    """A mel channels-first [batch, mel, frames] → waveform [batch, samples] or
    [batch, 1, samples]: the mel dim."""
    if len(ins) != 1 or not _is(ins[0], FLOATS, "*FS") or len(outs) != 1:
        return None
    if not (_is(outs[0], FLOATS, "*S") or _is(outs[0], FLOATS, "*1S")):
        return None
    return ins[0]["shape"][1]


def _conditioning(ins: list[Value], outs: list[Value]) -> tuple[int | None, int] | None:
    """Integer codes [batch, codes] (+ a reference mel [batch, frames, mel] and a cond
    [batch, width]) → one per-position embedding [rows, positions, width] and per-row ones
    [rows, width]: (reference mel dim or None, the code embedding's width)."""
    if not any(_is(v, INTEGERS, "*S") for v in ins):
        return None
    if any(v["dtype"] not in INTEGERS | FLOATS or len(v["shape"]) > 3 for v in ins):
        return None
    sequences = [v for v in outs if _is(v, FLOATS, "*SF")]
    rows = [v for v in outs if _is(v, FLOATS, "*F")]
    if len(sequences) != 1 or not rows or len(sequences) + len(rows) != len(outs):
        return None
    mels = [_width(v) for v in ins if _is(v, FLOATS, "*SF")]
    return (mels[0] if len(mels) == 1 else None), _width(sequences[0])


def _dit_mel(ins: list[Value], outs: list[Value]) -> int | None:
    """One flow-matching step: a noisy mel [rows, frames, mel], a time [rows] and the
    conditioning's embeddings → [rows, frames, mel], all float: the mel dim."""
    if len(outs) != 1 or not _is(outs[0], FLOATS, "*SF") or len(ins) < 2:
        return None
    mel = _width(outs[0])
    if any(v["dtype"] not in FLOATS for v in ins):
        return None
    if not any(_is(v, FLOATS, "*SF") and _width(v) == mel for v in ins):
        return None
    times = [v for v in ins if len(v["shape"]) <= 1]
    rest = [v for v in ins if v not in times]
    if not times or not all(_is(v, FLOATS, "*SF") or _is(v, FLOATS, "*F") for v in rest):
        return None
    return mel


def _talker(ins: list[Value], outs: list[Value]) -> tuple[str, int, int] | None:
    """Embeddings [batch, seq, hidden] with integer inputs (codec ids, positions [3, batch,
    seq]) and/or a cache of rank 4 [batch, kv_heads, past, head_dim] → logits [batch, seq,
    vocab] (+ the present cache): (its role, hidden, vocab)."""
    embeds = [v for v in ins if _is(v, FLOATS, "*SF")]
    caches = [v for v in ins if _is(v, FLOATS, "*FSF")]
    integers = [v for v in ins if v["dtype"] in INTEGERS]
    if len(embeds) != 1 or len(embeds) + len(caches) + len(integers) != len(ins):
        return None
    if not caches and not integers:
        return None  # one sequence in, one out: a projection or a bare talker, see _resolve
    logits = [v for v in outs if _is(v, FLOATS, "*SF")]
    presents = [v for v in outs if _is(v, FLOATS, "*FSF")]
    if len(logits) != 1 or len(logits) + len(presents) != len(outs):
        return None
    if not caches:
        role = TALKER
    elif any(v["dtype"] == "int32" for v in integers):
        role = TALKER_FUSED  # GroupQueryAttention's lengths: seqlens_k, total_sequence_length
    else:
        role = TALKER_KV
    return role, _width(embeds[0]), _width(logits[0])


def _heads(value: Value) -> tuple[int, int]:
    """[kv_heads, head_dim] of a cache tensor [batch, kv_heads, length, head_dim]."""
    return value["shape"][1], value["shape"][3]


def _sequence_map(report: ModelReport) -> tuple[int, int, bool] | None:
    """One float sequence [batch, seq, a] → one [batch, seq', b] and nothing else: the
    projection's shape, and that of a talker exported without positions. (a, b, whether
    seq' is a symbol of its own: the projection halves the frames, a talker's logits keep
    one row per position)."""
    ins, outs = report.inputs, report.outputs
    if len(ins) != 1 or len(outs) != 1:
        return None
    if not (_is(ins[0], FLOATS, "*SF") and _is(outs[0], FLOATS, "*SF")):
        return None
    seq_in, seq_out = ins[0]["shape"][1], outs[0]["shape"][1]
    shrinks = isinstance(seq_in, str) and isinstance(seq_out, str) and seq_in != seq_out
    return _width(ins[0]), _width(outs[0]), shrinks


def _classify(report: ModelReport) -> None:
    """The role the graph's shapes allow, alone; a bare sequence map is settled by
    ``_resolve`` against the other models (a projection if it downsamples)."""
    ins, outs = report.inputs, report.outputs
    if found := _audio_encoder(ins, outs):
        report.role, (report.input_width, report.output_width) = AUDIO_ENCODER, found
    elif (mel := _vocoder(ins, outs)) is not None:
        report.role, report.input_width = VOCODER, mel
    elif conditioning := _conditioning(ins, outs):
        report.role, (report.input_width, report.output_width) = CONDITIONING, conditioning
    elif (mel := _dit_mel(ins, outs)) is not None:
        report.role, report.input_width, report.output_width = DIT, mel, mel
    elif talker := _talker(ins, outs):
        report.role, report.input_width, report.output_width = talker
        past = sorted(_heads(v) for v in ins if _is(v, FLOATS, "*FSF"))
        present = sorted(_heads(v) for v in outs if _is(v, FLOATS, "*FSF"))
        if past != present:
            report.problems.append(
                f"its cache does not round-trip: {len(past)} past inputs, {len(present)} "
                "present outputs, or their [kv_heads, head_dim] differ"
            )
    elif mapping := _sequence_map(report):
        width_in, width_out, shrinks = mapping
        report.role = PROJECTION if shrinks else TALKER
        report.input_width, report.output_width = width_in, width_out


def read_model(path: Path, root: Path) -> ModelReport:
    """One model's files and graph; a graph that cannot be read is reported, not raised."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    from omniforge.artifacts import describe_values

    report = ModelReport(path.relative_to(root).as_posix(), 0, [], [], [])

    def unreadable(why: str) -> ModelReport:
        report.error = why
        report.problems.append(why)
        return report

    if not path.exists():
        return unreadable(f"a link to {os.readlink(path)!r}, which does not exist")
    if not path.is_file():
        return unreadable("not a file")
    report.graph_bytes = path.stat().st_size
    if report.graph_bytes == 0:
        return unreadable("an empty file (0 bytes), not an ONNX graph")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except OSError as err:
        return unreadable(f"cannot be read: {err.strerror or err}")
    except Exception as err:  # a truncated or foreign file: say so, keep going
        return unreadable(f"not a readable ONNX graph: {type(err).__name__}: {err}")
    if not model.graph.node and not model.graph.output:
        return unreadable("parses as ONNX but holds no graph (no nodes, no outputs)")
    needed: dict[str, int] = {}
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            info = ExternalDataInfo(tensor)
            end = (info.offset or 0) + (info.length or 0)
            needed[info.location] = max(needed.get(info.location, 0), end)
    for location, end in sorted(needed.items()):
        data = path.parent / location
        if not _stays_in(path.parent, location):
            report.external.append(ExternalFile(location, end, None))
            report.problems.append(
                f"external data {location!r} leaves the model's folder (onnxruntime refuses it)"
            )
            continue
        size = data.stat().st_size if data.is_file() else None
        report.external.append(ExternalFile(location, end, size))
        if size is None:
            report.problems.append(f"external data {location} is missing")
        elif size < end:
            report.problems.append(f"external data {location} is truncated ({size} of {end} B)")
    report.inputs = describe_values(model.graph.input)
    report.outputs = describe_values(model.graph.output)
    _classify(report)
    return report


def _stays_in(folder: Path, location: str) -> bool:
    """An external-data location onnxruntime accepts: relative, and inside the folder."""
    relative = Path(location)
    if not location or relative.is_absolute() or ".." in relative.parts:
        return False
    return (folder / relative).resolve().is_relative_to(folder.resolve())


def name_models(paths: list[str], listed: int = 3) -> str:
    """A few paths by name, a long list as its first ones and a count: table rows stay short."""
    if len(paths) <= listed:
        return ", ".join(paths)
    return f"{', '.join(paths[: listed - 1])} and {len(paths) - listed + 1} more"


def _smallest_vocabulary(token2wav_num_embeds: int) -> int:
    """The narrowest logits a talker can have: Token2Wav's codes and every codec control id."""
    return max(token2wav_num_embeds, max(CONTROL_IDS) + 1)


def _resolve(reports: list[ModelReport], token2wav_num_embeds: int) -> None:
    """A bare sequence map that keeps its length (see ``_sequence_map``) is a talker unless
    the chain says it is a projection: it reads what an audio encoder here writes, or it
    writes the width another talker-shaped model here reads. One whose output is too narrow
    for a codec vocabulary is a talker only beside a projection, to be judged against it:
    alone, nothing makes it one (a sequence classifier has the same shapes)."""
    encoders = {r.output_width for r in reports if r.role == AUDIO_ENCODER}
    readers = [(r, r.input_width) for r in reports if r.role in TALKERS]
    bare = [r for r in reports if r.role == TALKER and _sequence_map(r) is not None]
    for report in bare:
        read = any(width == report.output_width for r, width in readers if r is not report)
        if report.input_width in encoders or read:
            report.role = PROJECTION
    if any(r.role == PROJECTION for r in reports):
        return
    vocabulary = _smallest_vocabulary(token2wav_num_embeds)
    for report in bare:
        width = report.output_width
        if report.role == TALKER and width is not None and width < vocabulary:
            report.role = UNKNOWN
            report.problems.append(
                f"fits no link: shaped like a talker without positions, but its output width "
                f"{width} is too narrow for a codec vocabulary (a talker's holds Token2Wav's "
                f"codes [0, {token2wav_num_embeds}) and the control ids {CONTROL_IDS}: "
                f"{vocabulary} or more)"
            )


def _link(
    producers: list[ModelReport],
    consumers: list[ModelReport],
    give: Callable[[ModelReport], Any],
    take: Callable[[ModelReport], Any],
    labels: tuple[str, str, str, str],
    show: Callable[[Any], str] = str,
) -> list[ModelReport]:
    """Each consumer reads the producers whose ``give`` is its ``take``; a side with nobody
    to meet on the other (when the other side is here at all) is a problem. ``labels``:
    (what a producer gives, what a consumer takes, a producer, a consumer). Returns the
    consumers nobody here feeds."""
    gives, takes, producer, consumer = labels
    unfed = []
    for report in consumers:
        want = take(report)
        feeding = [p.path for p in producers if want is not None and give(p) == want]
        if feeding:
            report.fits.append(f"reads {name_models(feeding)}")
        elif producers:
            unfed.append(report)
            offered = sorted({give(p) for p in producers if give(p) is not None})
            report.problems.append(
                f"{takes} {show(want)} matches no {producer} here "
                f"(they write [{', '.join(show(o) for o in offered)}])"
            )
    for report in producers:
        have = give(report)
        fed = [c.path for c in consumers if have is not None and take(c) == have]
        if fed:
            report.fits.append(f"feeds {name_models(fed)}")
        elif consumers:
            report.problems.append(f"{gives} {show(have)} is read by no {consumer} here")
    return unfed


Embeddings = tuple[tuple[int, ...], tuple[int, ...]]


def _embeddings(values: list[Value], mel: int | None = None) -> Embeddings:
    """The widths of per-position [rows, positions, w] and per-row [rows, w] floats, the
    DiT's noisy mel (``mel``) left out: the conditioning → DiT contract."""
    sequences = [_width(v) for v in values if _is(v, FLOATS, "*SF")]
    if mel in sequences:
        sequences.remove(mel)
    rows = [_width(v) for v in values if _is(v, FLOATS, "*F")]
    return tuple(sorted(sequences)), tuple(sorted(rows))


def _show_embeddings(widths: Embeddings) -> str:
    sequences, rows = widths
    per_position = "/".join(map(str, sequences)) or "none"
    return f"{per_position} per position, {'/'.join(map(str, rows)) or 'none'} per row"


def judge_chain(reports: list[ModelReport], token2wav_num_embeds: int) -> None:
    """Which link each model can fill, given the others: widths must meet, codes must fit.

    audio encoder d_model = projection input; projection output = talker input; the
    talker's vocabulary holds Token2Wav's codes and the codec control ids; the
    conditioning's embeddings = the DiT's; the DiT's mel = the vocoder's."""
    _resolve(reports, token2wav_num_embeds)

    def having(*roles: str) -> list[ModelReport]:
        return [r for r in reports if r.role in roles]

    def given(r: ModelReport) -> int | None:
        return r.output_width

    def taken(r: ModelReport) -> int | None:
        return r.input_width

    encoders, projections, talkers = having(AUDIO_ENCODER), having(PROJECTION), having(*TALKERS)
    conditionings, dits, vocoders = having(CONDITIONING), having(DIT), having(VOCODER)
    widths = ("output width", "input width")
    _link(encoders, projections, given, taken, (*widths, "audio encoder", "projection"))
    unfed = _link(projections, talkers, given, taken, (*widths, "projection", "talker"))
    for talker in talkers:
        vocab = talker.output_width
        if vocab is None or vocab < token2wav_num_embeds:
            why = f"vocabulary {vocab} does not hold Token2Wav's codes [0, {token2wav_num_embeds})"
            if talker in unfed:  # neither end of the talker meets the chain
                talker.problems.insert(
                    0,
                    f"fits no chain: no projection here writes its width {talker.input_width}"
                    f" and its vocabulary {vocab} cannot hold Token2Wav's codes",
                )
            talker.problems.append(why)
        elif max(CONTROL_IDS) >= vocab:
            talker.problems.append(
                f"vocabulary {vocab} cannot emit codec control ids {CONTROL_IDS}"
            )
        else:
            talker.fits.append(f"feeds Token2Wav (codes < {token2wav_num_embeds})")
    _link(
        conditionings,
        dits,
        lambda r: _embeddings(r.outputs),
        lambda r: _embeddings(r.inputs, mel=r.input_width),
        ("output", "conditioning input", "Token2Wav conditioning", "Token2Wav DiT"),
        _show_embeddings,
    )
    _link(dits, vocoders, given, taken, ("mel dim", "mel dim", "Token2Wav DiT", "vocoder"))


def io_summary(values: list[dict[str, Any]]) -> list[str]:
    """Graph inputs or outputs, one line each, per-layer ones folded: ``past_key_values.*.key
    [batch, 4, past, 128] x24``."""
    folded: dict[tuple[str, str], int] = {}
    for value in values:
        name = re.sub(r"\.\d+\.", ".*.", value["name"])
        shape = "[" + ", ".join(str(d) for d in value["shape"]) + "]"
        folded[(name, shape)] = folded.get((name, shape), 0) + 1
    return [f"{name} {shape}" + (f" ×{n}" if n > 1 else "") for (name, shape), n in folded.items()]


def inventory(root: Path, token2wav_num_embeds: int = TOKEN2WAV_NUM_EMBEDS) -> list[ModelReport]:
    """Every ``.onnx`` under ``root`` (symlinks not followed), sorted by path."""
    root = Path(root)
    unreadable: list[ModelReport] = []

    def cannot_list(err: OSError) -> None:
        folder = Path(err.filename or root)
        why = f"folder cannot be read: {err.strerror or err}"
        name = folder.relative_to(root).as_posix() if folder != root else "."
        unreadable.append(ModelReport(name + "/", 0, [], [], [], problems=[why], error=why))

    paths = sorted(
        Path(folder) / name
        for folder, _, names in os.walk(root, onerror=cannot_list)
        for name in names
        if name.endswith(".onnx")
    )
    reports = [read_model(path, root) for path in paths]
    judge_chain(reports, token2wav_num_embeds)
    return sorted(reports + unreadable, key=lambda report: report.path)
