"""Typed params: one model per params.yaml section, unknown keys rejected.

Every stage reads params.yaml through :func:`load_params` before it touches an output, so a
typo fails at once with a message that names the key (``quantize.int4.blok_size``).
Component names are checked against the component registry by the stage entry points
(:func:`omniforge.stage.load_checked_params`); preset names against the presets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    ValidationError,
    field_validator,
    model_validator,
)

from omniforge.errors import ParamsError
from omniforge.sources.presets import PRESETS

# The unquantized variant of every component; the others are named after quantize schemes,
# and a KV-cache talker also gets HYBRID: one scheme's graph for the prompt, another's per code.
FP32 = "fp32"
HYBRID = "hybrid"
RESERVED_VARIANTS = (FP32, HYBRID)
# What torch 2.13's dynamo exporter can emit: torchlib is written at opset 18, and
# torch.onnx refuses anything above ONNX_MAX_OPSET (23).
MIN_OPSET, MAX_OPSET = 18, 23

PositiveInt = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class ModelParams(Section):
    """Where the weights come from."""

    source: Literal["synthetic", "pretrained"] = "synthetic"
    preset: str = "lite"
    seed: int = 0
    # pretrained only: a local checkpoint directory, or a hub id found in the local hub cache.
    path: str | None = None
    hub_id: str | None = None
    revision: str | None = None
    # The path DVC hashes for the weights (dvc.yaml cannot template a null dependency):
    # set it to model.path for a local checkpoint; presets.py pins a synthetic model.
    dvc_dep: str = "src/omniforge/sources/presets.py"

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, preset: str) -> str:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset (known: {sorted(PRESETS)})")
        return preset

    @model_validator(mode="after")
    def _source_fields(self) -> ModelParams:
        if self.source == "pretrained" and not (self.path or self.hub_id):
            raise ValueError("model.source 'pretrained' needs model.path or model.hub_id")
        if self.source == "pretrained" and self.path and self.hub_id:
            raise ValueError("give model.path or model.hub_id, not both")
        return self


class SynthesisSetting(Section):
    """How the mel is solved for (omniforge.runtime.SynthesisConfig)."""

    num_steps: int = Field(default=10, ge=2)  # time points: 4 DiT runs per interval
    guidance_scale: float = Field(default=0.5, ge=0)  # below 1e-5: no guidance
    sway_coefficient: float | None = -1.0

    @model_validator(mode="after")
    def _solvable(self) -> SynthesisSetting:
        from omniforge.runtime.token2wav import SynthesisConfig

        SynthesisConfig(**self.model_dump())  # a ValueError names the field
        return self


class StreamParams(Section):
    """How a stream is cut, in mel frames (omniforge.runtime.StreamSettings)."""

    chunk_frames: int = Field(default=48, ge=2, multiple_of=2)
    left_frames: int = Field(default=48, ge=0, multiple_of=2)
    right_frames: int = Field(default=24, ge=0, multiple_of=2)
    vocoder_frames: int = Field(default=24, ge=0, multiple_of=2)


# The setting every other one is judged against: transformers' defaults.
DEFAULT_SETTING = "default"


class Token2WavParams(Section):
    # A JSON or PyTorch (.pt) file checked against the model's own Token2Wav config;
    # None: the model's config alone.
    metadata: str | None = None
    # Named synthesis settings, each validated and benchmarked for every variant.
    settings: dict[str, SynthesisSetting] = {
        DEFAULT_SETTING: SynthesisSetting(),
        "fast": SynthesisSetting(num_steps=5, guidance_scale=0.0),
    }
    stream: StreamParams = StreamParams()
    validate_codes: int = Field(default=60, ge=1)  # the utterance validate synthesises
    bench_codes: int = Field(default=100, ge=1)  # the utterance benchmark times (2 s)
    bench_repeats: int = Field(default=3, ge=1)  # syntheses timed per setting (median)

    @field_validator("settings")
    @classmethod
    def _has_default(cls, settings: dict[str, SynthesisSetting]) -> dict[str, SynthesisSetting]:
        if DEFAULT_SETTING not in settings:
            raise ValueError(
                f"needs a setting named '{DEFAULT_SETTING}': the others are judged against it"
            )
        return settings


class ChainParams(Section):
    """The chain benchmark: one spoken question through PyTorch eager and each chain set."""

    question: str = "data/question.wav"  # a WAV made offline (data/README.md), never fetched
    setting: str = DEFAULT_SETTING  # the token2wav setting every contender synthesises with
    # Codes of the reply; None: as long as the question (2 codes per projected state).
    max_codes: int | None = Field(default=None, ge=1)
    repeats: int = Field(default=3, ge=1)  # timed turns per contender, after a warm-up


class ExportParams(Section):
    opset: int = Field(default=20, ge=MIN_OPSET, le=MAX_OPSET)
    # Example sizes used for tracing. Sizes 0 and 1 get specialised by torch.export,
    # so both must be >= 2 for the dims to stay dynamic.
    example_batch: int = Field(default=2, ge=2)
    example_length: int = Field(default=8, ge=2)


class SimplifyParams(Section):
    # onnxsim's own random-input checks; validate does the real parity against PyTorch.
    check_n: int = Field(default=0, ge=0)


BlockSize = Literal[16, 32, 64, 128, 256]


class Int8Params(Section):
    """Dynamic int8: int8 weights per column, activations quantized at run time."""

    method: Literal["int8"] = "int8"
    # 7-bit weights: AVX2 without VNNI saturates full-range u8 x s8 products (3-9 % error).
    reduce_range: bool = True
    # The codec embedding table: 8-bit blocks of this many values (GatherBlockQuantized).
    embedding_block_size: BlockSize = 128


class Int4Params(Section):
    """4-bit weight blocks (MatMulNBits), activations float or int8 per accuracy_level."""

    method: Literal["int4"] = "int4"
    block_size: BlockSize = 32
    # 4 = int8 activations in the MatMulNBits kernel: the fast path on CPU; 1 = fp32 (exact).
    accuracy_level: Literal[0, 1, 2, 3, 4] = 4
    symmetric: bool = True
    # The codec embedding table: 4-bit blocks of this many values (GatherBlockQuantized).
    embedding_block_size: BlockSize = 32


Scheme = Annotated[Int8Params | Int4Params, Field(discriminator="method")]
# Variant names appear in paths, stage names and artifact tags.
VariantName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*[a-z0-9]$")]


class QuantizeParams(RootModel[dict[VariantName, Scheme]]):
    """One entry per quantization scheme; each names a variant of every component."""

    model_config = ConfigDict(frozen=True)
    root: dict[VariantName, Scheme] = {
        "int8": Int8Params(),
        "int4": Int4Params(),
        "int4-exact": Int4Params(accuracy_level=1),
        # 4.25 bits a weight instead of 5: a decode step reads the weights once, so fewer
        # bytes is a faster step (the README's Performance section has the figures).
        "int4-block128": Int4Params(block_size=128),
    }

    @model_validator(mode="before")
    @classmethod
    def _method_from_name(cls, raw: Any) -> Any:
        """``int4-exact: {accuracy_level: 1}`` means method int4: a name that starts with a
        method need not repeat it."""
        if not isinstance(raw, dict):
            return raw
        methods = ("int8", "int4")
        out = {}
        for name, entry in raw.items():
            if isinstance(entry, dict) and "method" not in entry:
                method = next((m for m in methods if str(name).startswith(m)), None)
                if method is None:
                    raise ValueError(f"{name}: give a method ({' or '.join(methods)})")
                entry = {"method": method, **entry}
            out[name] = entry
        return out

    @field_validator("root")
    @classmethod
    def _names_free(cls, root: dict[str, Scheme]) -> dict[str, Scheme]:
        for name in root:
            if name in RESERVED_VARIANTS:
                raise ValueError(f"'{name}' names a variant omniforge makes itself")
        if not root:
            raise ValueError("needs at least one scheme")
        return root

    def schemes(self) -> tuple[str, ...]:
        return tuple(self.root)

    def __getitem__(self, name: str) -> Int8Params | Int4Params:
        return self.root[name]


class Shape(Section):
    batch: PositiveInt
    length: PositiveInt


# Two or more shapes per component, for every component, in chain order: its keys are the
# components built by default (Params.components).
DEFAULT_SHAPES: dict[str, list[Shape]] = {
    "audio_encoder": [Shape(batch=2, length=200), Shape(batch=3, length=77)],
    "projection": [Shape(batch=2, length=64), Shape(batch=3, length=31)],
    "talker": [Shape(batch=2, length=16), Shape(batch=3, length=7)],
    # New positions after a cache of length // 2 + 2.
    "talker_kv": [Shape(batch=2, length=16), Shape(batch=3, length=7)],
    # A prompt of length, then a decode step after it.
    "talker_fused": [Shape(batch=2, length=16), Shape(batch=3, length=7)],
    "token2wav_conditioning": [Shape(batch=2, length=13), Shape(batch=3, length=30)],
    "token2wav_dit": [Shape(batch=2, length=37), Shape(batch=4, length=80)],
    "token2wav_vocoder": [Shape(batch=2, length=24), Shape(batch=3, length=41)],
}


class ValidateParams(Section):
    seed: int = 1234
    # Two or more shapes per component: parity is checked on each, and running them all
    # proves the declared dynamic dims are really dynamic.
    shapes: dict[str, list[Shape]] = DEFAULT_SHAPES

    @field_validator("shapes")
    @classmethod
    def _two_distinct_shapes(cls, shapes: dict[str, list[Shape]]) -> dict[str, list[Shape]]:
        for component, items in shapes.items():
            batches = {s.batch for s in items}
            lengths = {s.length for s in items}
            if len(batches) < 2 or len(lengths) < 2:
                raise ValueError(
                    f"validate.shapes.{component} needs two shapes that differ in batch and length "
                    "to prove both dims are dynamic"
                )
        return shapes


class BenchmarkParams(Section):
    threads: PositiveInt = 2
    warmup: int = Field(default=3, ge=0)
    iterations: PositiveInt = 20
    load_repeats: PositiveInt = 3
    batch: PositiveInt = 1
    lengths: dict[str, Annotated[list[PositiveInt], Field(min_length=1)]] = {
        "talker": [16, 64, 256],
        "talker_kv": [64, 256, 1024],  # cache lengths of one decode step
        "talker_fused": [64, 256, 1024],
        "audio_encoder": [100, 200],
        "projection": [100, 500, 1500],
        "token2wav_conditioning": [50, 250],  # codes (1 s, 5 s of audio)
        "token2wav_dit": [48, 100],  # mel frames of one evaluation (a chunk, 1 s)
        "token2wav_vocoder": [48, 100],  # mel frames
    }
    compare_torch: bool = True


class TalkerKVParams(Section):
    """The KV-cache talker's generation check (validate) and decode benchmark.

    Decode-step lengths, warmup, iterations, batch and the torch comparison come from the
    benchmark section (benchmark.lengths.talker_kv are cache lengths).
    """

    validate_steps: PositiveInt = 48  # greedy codes generated by torch and by each variant
    validate_batch: PositiveInt = 2
    prompt_length: int = Field(default=16, ge=2)  # codec pad and bos sit on its last two
    reply_length: PositiveInt = 8  # thinker reply states; the last one repeats after that
    bench_reference_past: int = Field(default=256, ge=0)  # the headline decode figures
    bench_prefill_length: PositiveInt = 128
    bench_generation_steps: PositiveInt = 32  # codes of the timed utterance
    bandwidth_mib: int = Field(default=256, ge=16)  # buffer of the memory-bandwidth probe
    # The most cache positions a fused talker allocates (validate, benchmark): generation
    # beyond it is refused with a clear error.
    max_cache_length: PositiveInt = 4096
    # The hybrid pair: this variant's graph runs the prompt, that one's every code.
    hybrid_prefill: str = "int8"
    hybrid_decode: str = "int4-block128"
    # The plain graph of this variant is timed beside every quantized fused talker too, so
    # each speedup is also quoted against one fixed graph (today's plain int4) in the same run.
    speedup_reference: str = "int4"


class Gate(Section):
    """Thresholds a variant must meet to be published; None disables a check."""

    min_cosine: Fraction | None = None
    max_abs_error: float | None = Field(default=None, ge=0)
    min_top1_agreement: Fraction | None = None
    # Budget for the median latency at the largest benchmarked length.
    max_p50_ms: float | None = Field(default=None, gt=0)
    # KV-cache talker: greedy codes equal to PyTorch's for at least this many steps.
    min_steps_before_divergence: int | None = Field(default=None, ge=0)
    # KV-cache talker, teacher-forced on PyTorch's codes: logits cosine and top-1 per step.
    min_forced_cosine: Fraction | None = None
    min_forced_top1_agreement: Fraction | None = None
    max_decode_real_time_factor: float | None = Field(default=None, gt=0)
    # Token2Wav, against transformers' synthesis from the same noise (worst setting): the
    # waveform's SNR offline and streamed, and the log-mel distance (mean |dB| difference).
    min_synthesis_snr_db: float | None = None
    min_stream_snr_db: float | None = None
    max_log_mel_distance_db: float | None = Field(default=None, ge=0)


# 4-bit weights, whatever the activations: random weights give near-tied logits, so top-1
# is low for reasons a real checkpoint does not have (see the README).
INT4_GATE = Gate(
    min_cosine=0.97,
    min_top1_agreement=0.3,
    min_forced_cosine=0.97,
    min_forced_top1_agreement=0.5,
    min_synthesis_snr_db=12,
    max_log_mel_distance_db=1.0,
)


class PublishParams(Section):
    gates: dict[str, Gate] = {
        "fp32": Gate(
            min_cosine=0.99999,
            max_abs_error=1e-3,
            min_top1_agreement=0.99,
            min_steps_before_divergence=32,
            min_synthesis_snr_db=50,
            min_stream_snr_db=10,
        ),
        "int8": Gate(
            min_cosine=0.99,
            min_top1_agreement=0.5,
            min_forced_cosine=0.99,
            min_forced_top1_agreement=0.8,
            min_synthesis_snr_db=20,
            max_log_mel_distance_db=0.5,
        ),
        "int4": INT4_GATE,
        "int4-exact": INT4_GATE,
        "int4-block128": INT4_GATE,
        "hybrid": Gate(min_forced_cosine=0.97, min_forced_top1_agreement=0.5),
    }


class Params(Section):
    # By default every component the defaults describe (a component needs validate shapes and
    # benchmark lengths anyway), in chain order; params.yaml names the ones a run builds.
    components: list[str] = Field(default_factory=lambda: list(DEFAULT_SHAPES), min_length=1)
    # Artifacts assembled from the components' graphs (one file each in components/).
    assemblies: list[str] = ["token2wav"]
    model: ModelParams = ModelParams()
    token2wav: Token2WavParams = Token2WavParams()
    export: ExportParams = ExportParams()
    simplify: SimplifyParams = SimplifyParams()
    quantize: QuantizeParams = QuantizeParams()
    # "validate" would shadow pydantic's BaseModel.validate: the field is validate_ in code.
    validate_: ValidateParams = Field(default=ValidateParams(), alias="validate")
    benchmark: BenchmarkParams = BenchmarkParams()
    publish: PublishParams = PublishParams()
    talker_kv: TalkerKVParams = TalkerKVParams()
    chain: ChainParams = ChainParams()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("components", "assemblies")
    @classmethod
    def _unique(cls, names: list[str]) -> list[str]:
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"listed more than once: {repeated}")
        return names

    @model_validator(mode="after")
    def _named_variants_are_built(self) -> Params:
        for key in ("hybrid_prefill", "hybrid_decode", "speedup_reference"):
            name = getattr(self.talker_kv, key)
            if name not in self.variants:
                raise ValueError(
                    f"talker_kv.{key}: '{name}' is not a built variant ({list(self.variants)})"
                )
        if self.talker_kv.speedup_reference == FP32:
            # It is loaded beside every fused variant: a second full-size fp32 talker.
            raise ValueError("talker_kv.speedup_reference: fp32 is too large to time beside")
        return self

    @model_validator(mode="after")
    def _chain_setting_exists(self) -> Params:
        if self.chain.setting not in self.token2wav.settings:
            raise ValueError(
                f"chain.setting: '{self.chain.setting}' is not a token2wav setting "
                f"({sorted(self.token2wav.settings)})"
            )
        return self

    @model_validator(mode="after")
    def _settings_per_component(self) -> Params:
        # Entries for components not built are kept (and ignored), so dropping a
        # component does not also mean deleting its settings.
        for section, mapping in (
            ("validate.shapes", self.validate_.shapes),
            ("benchmark.lengths", self.benchmark.lengths),
        ):
            for name in (c for c in self.components if c not in mapping):
                raise ValueError(f"{section} has no entry for component '{name}'")
        return self

    @property
    def variants(self) -> tuple[str, ...]:
        """The variants built of every component: fp32, then one per quantize scheme."""
        return (FP32, *self.quantize.schemes())

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def _key(loc: tuple[object, ...]) -> str:
    """``quantize.int4.block_size``: pydantic puts the scheme's method tag in the path too."""
    parts = [str(part) for part in loc]
    if parts[:1] == ["quantize"] and len(parts) > 2 and parts[2] in ("int8", "int4"):
        del parts[2]
    return ".".join(parts) or "<root>"


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid params"]
    for item in err.errors():
        key = _key(item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
            continue
        message = item["msg"].removeprefix("Value error, ")
        got = repr(item.get("input"))
        # The value is worth repeating when it is short: a key's, not a whole section's.
        lines.append(f"  {key}: {message}" + (f" (got {got})" if len(got) <= 80 else ""))
    return "\n".join(lines)


def parse_params(raw: dict[str, Any] | None, source: str = "params") -> Params:
    try:
        return Params.model_validate(raw or {})
    except ValidationError as err:
        raise ParamsError(_format_error(err, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    return parse_params(raw, str(path))
