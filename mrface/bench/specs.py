"""What the benchmark suites run: one :class:`Spec` per benchmark script invocation, the GPU suite's sections.

A spec names its script in ``benchmarks/``, its arguments for full and quick runs per device and the
headline it contributes to BENCHMARKS.md (a function of its rows, see :mod:`mrface.bench.headlines`).
``SPECS`` is ``mrface bench [area]``; ``SECTIONS`` is ``mrface bench gpu`` in order, each with its time
budget (seconds); ``GOALS_SECTION`` is the GPU suite's check of the issue's targets, computed from the other rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mrface.bench import headlines

AREAS = ("kernels", "train", "inference", "data")


@dataclass(frozen=True)
class Headline:
    """A benchmark's lines in the headline table of BENCHMARKS.md.

    ``lines(entry)`` turns one run's entry (rows, extra, env) into (what, result) pairs. Specs sharing one
    Headline (a benchmark and its sweep) give it one run's rows: the first declared benchmark that yields
    lines. ``order``: the position of these lines in the table (smaller first).
    """

    lines: Callable[[dict], list[tuple[str, str]]]
    order: int


# The headline table reads: GPU tests and goals, then kernels, training, inference, data.
TESTS_HEADLINE = Headline(headlines.tests_lines, 0)
GOALS_HEADLINE = Headline(headlines.goals_lines, 1)
HALF_CHECK_HEADLINE = Headline(headlines.half_check_lines, 2)
MARGIN_SOFTMAX_HEADLINE = Headline(headlines.margin_softmax_lines, 3)
DEGRADE_HEADLINE = Headline(headlines.degrade_lines, 4)
GUMBEL_HEADLINE = Headline(headlines.gumbel_lines, 5)
TRAIN_HEADLINE = Headline(headlines.train_lines, 6)
TRAIN_COMPILE_HEADLINE = Headline(headlines.train_lines, 7)
SCALING_HEADLINE = Headline(headlines.scaling_lines, 8)
INFERENCE_HEADLINE = Headline(headlines.inference_lines, 9)
DATA_HEADLINE = Headline(headlines.data_lines, 10)


@dataclass(frozen=True)
class Spec:
    """One benchmark: a script in benchmarks/ and its arguments for full and quick runs per device."""

    name: str
    area: str
    script: str
    full: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()
    full_cuda: tuple[str, ...] | None = None  # replaces ``full`` on CUDA when given
    full_only: bool = False  # a scaling sweep skipped under --quick
    headline: Headline | None = None  # its lines in BENCHMARKS.md's headline table

    def args(self, device: str, quick: bool) -> tuple[str, ...]:
        if quick:
            return self.quick
        return self.full_cuda if device == "cuda" and self.full_cuda is not None else self.full


# Quick sizes are tiny on purpose: they check the pipeline runs (CI), they are not published numbers.
SPECS: tuple[Spec, ...] = (
    Spec(
        "degrade",
        "kernels",
        "bench_degrade.py",
        full=("--random", "--out-buffers"),
        quick=("--batches", "2", "8", "--repeats", "2"),
        headline=DEGRADE_HEADLINE,
    ),
    Spec(
        "degrade_uint8",
        "kernels",
        "bench_degrade.py",
        full_only=True,
        full=("--dtype", "uint8", "--batches", "1024", "--repeats", "10", "--out-buffers"),
    ),
    Spec(
        "degrade_bf16",
        "kernels",
        "bench_degrade.py",
        full_only=True,
        full=("--dtype", "bfloat16", "--batches", "1024", "--repeats", "10", "--out-buffers"),
    ),
    Spec(
        "degrade_busy",
        "kernels",
        "bench_degrade.py",
        full_only=True,
        full=("--batches", "256", "--filters", "area", "--random", "--busy", "2", "--repeats", "5"),
    ),
    # Under load: 2 gloo ranks x 2 threads, the fused head and degrade against their torch paths.
    Spec("load", "kernels", "bench_load.py", full_only=True, full=("--ranks", "2", "--threads", "2")),
    Spec(
        "gumbel_fps",
        "kernels",
        "bench_gumbel_fps.py",
        quick=("--quick", "--dim", "32", "--max-gib", "0.0001"),
        headline=GUMBEL_HEADLINE,
    ),  # --max-gib keeps only the B=1 sets
    Spec(
        "gumbel_fps_sweep",
        "kernels",
        "bench_gumbel_fps.py",
        full=("--sweep",),
        full_only=True,
        headline=GUMBEL_HEADLINE,
    ),
    Spec(
        "heads",
        "kernels",
        "bench_heads.py",
        full=("--classes", "1000", "10000", "100000"),
        full_cuda=("--classes", "10000", "100000", "1000000"),
        quick=("--heads", "arcface", "--classes", "500", "2000", "--batch", "16", "--dim", "64", "--repeats", "2"),
    ),
    Spec(
        "margin_softmax",
        "kernels",
        "bench_margin_softmax.py",
        quick=("--shapes", "16,2000,64", "--margins", "arcface", "--repeats", "2"),
        headline=MARGIN_SOFTMAX_HEADLINE,
    ),  # a process per path on CPU
    # Under load: the fused chunked head against the materialised one while two processes spin on the CPU.
    Spec(
        "margin_softmax_busy",
        "kernels",
        "bench_margin_softmax.py",
        full_only=True,
        full=("--margins", "arcface", "--shapes", "512,20000,512", "--busy", "2"),
    ),
    Spec(
        "margin_softmax_classes",
        "kernels",
        "bench_margin_softmax.py",
        full_only=True,
        full=("--margins", "arcface", "--shapes", "512,10000,512", "512,30000,512", "512,100000,512"),
        full_cuda=(
            "--margins",
            "arcface",
            "--shapes",
            "512,10000,512",
            "512,100000,512",
            "512,300000,512",
            "512,1000000,512",
        ),
        headline=MARGIN_SOFTMAX_HEADLINE,
    ),
    Spec(
        "train",
        "train",
        "bench_train.py",
        quick=("--quick",),
        full_cuda=("--models", "iresnet50", "--batch", "128"),
        headline=TRAIN_HEADLINE,
    ),
    Spec("scaling", "train", "bench_scaling.py", quick=("--quick",), headline=SCALING_HEADLINE),
    # Full CPU runs keep the inference sizes a 2-core machine finishes in minutes (iresnet200 at batch 64 would
    # take hours there); full GPU runs use the scripts' defaults.
    Spec(
        "models",
        "inference",
        "bench_models.py",
        full=("--throughput", "--batch", "8", "--repeats", "3"),
        full_cuda=("--throughput",),
        quick=("--throughput", "--models", "iresnet_tiny", "--batch", "4", "--repeats", "2"),
    ),
    Spec(
        "inference",
        "inference",
        "bench_inference.py",
        full=(
            "--models",
            "iresnet_tiny",
            "btnet_tiny",
            "mobilefacenet",
            "iresnet50",
            "--batches",
            "1",
            "8",
            "32",
            "--repeats",
            "5",
            "--warmup",
            "2",
        ),
        full_cuda=(),
        quick=(
            "--models",
            "iresnet_tiny",
            "--batches",
            "1",
            "4",
            "--backends",
            "eager",
            "ort",
            "--repeats",
            "3",
            "--warmup",
            "1",
        ),
        headline=INFERENCE_HEADLINE,
    ),
    Spec("data", "data", "bench_data.py", quick=("--images", "200", "--batch", "32"), headline=DATA_HEADLINE),
)


HALF_ENV = {"MRFACE_MARGIN_TRITON_HALF": "1"}  # the half-precision re-test of the Triton margin kernels


@dataclass(frozen=True)
class Section:
    """One step of the suite: a benchmark script (``spec``) or the GPU tests (``spec`` None), with its budget."""

    name: str
    budget_s: float
    spec: Spec | None = None
    env: dict[str, str] = field(default_factory=dict)
    headline: Headline | None = None  # else its spec's

    @property
    def area(self) -> str:
        """The spec's area; ``tests`` for the GPU tests and the goals."""
        return self.spec.area if self.spec is not None else "tests"

    @property
    def declared_headline(self) -> Headline | None:
        """The section's own headline, else its spec's."""
        return self.headline or (self.spec.headline if self.spec is not None else None)


# GPU arguments (``full``) and the dry run's tiny CPU ones (``quick``) of the same scripts.
SECTIONS: tuple[Section, ...] = (
    Section("gpu_tests", 95, env=HALF_ENV, headline=TESTS_HEADLINE),
    Section(
        "margin_half_check",
        40,
        Spec(
            "margin_half_check",
            "kernels",
            "check_margin_half.py",
            full=("--margins", "arcface", "--configs", "each"),
            quick=("--margins", "arcface"),
            headline=HALF_CHECK_HEADLINE,
        ),
        env=HALF_ENV,
    ),
    Section(
        "margin_softmax",
        70,
        Spec(
            "margin_softmax",
            "kernels",
            "bench_margin_softmax.py",
            full=(
                "--dtypes",
                "float32",
                "bfloat16",
                "float16",
                "--shapes",
                "512,100000,512",
                "1024,250000,512",
                "--margins",
                "arcface",
                "--paths",
                "fused",
                "reference",
                "liger",
                "--repeats",
                "3",
            ),
            quick=(
                "--dtypes",
                "float32",
                "bfloat16",
                "float16",
                "--shapes",
                "8,300,32",
                "--margins",
                "arcface",
                "--paths",
                "fused",
                "reference",
                "liger",
                "--repeats",
                "1",
                "--in-process",
            ),
            headline=MARGIN_SOFTMAX_HEADLINE,
        ),
        env=HALF_ENV,
    ),
    Section(
        "degrade",
        25,
        Spec(
            "degrade",
            "kernels",
            "bench_degrade.py",
            quick=("--batches", "2", "--filters", "area", "--repeats", "1"),
            headline=DEGRADE_HEADLINE,
        ),
    ),
    Section(
        "gumbel_fps",
        30,
        Spec(
            "gumbel_fps",
            "kernels",
            "bench_gumbel_fps.py",
            quick=("--quick", "--dim", "16", "--max-gib", "0.0001"),
            headline=GUMBEL_HEADLINE,
        ),
    ),
    # 1536 RecordIO images (6 batches, reshuffled when used up): SynthFace renders them on one core first.
    Section(
        "train",
        75,
        Spec(
            "train",
            "train",
            "bench_train.py",
            full=(
                "--models",
                "iresnet50",
                "--batch",
                "256",
                "--classes",
                "100000",
                "--base",
                "amp",
                "channels_last",
                "--amp",
                "bf16",
                "--variants",
                "reference_head",
                "recordio",
                "--workers",
                "8",
                "--record-images",
                "1536",
                "--distill",
                "btnet_r50",
                "--repeats",
                "5",
                "--warmup",
                "2",
            ),
            quick=(
                "--quick",
                "--batch",
                "4",
                "--classes",
                "50",
                "--base",
                "amp",
                "--amp",
                "bf16",
                "--variants",
                "reference_head",
                "recordio",
                "--workers",
                "1",
                "--record-images",
                "16",
                "--distill",
                "btnet_tiny",
                "--repeats",
                "1",
                "--warmup",
                "0",
            ),
            headline=TRAIN_HEADLINE,
        ),
    ),
    # torch.compile in its own section: its compile time cannot cost the other training rows.
    Section(
        "train_compile",
        55,
        Spec(
            "train_compile",
            "train",
            "bench_train.py",
            full=(
                "--models",
                "iresnet50",
                "--batch",
                "256",
                "--classes",
                "100000",
                "--base",
                "amp",
                "channels_last",
                "--amp",
                "bf16",
                "--variants",
                "compile",
                "--repeats",
                "5",
                "--warmup",
                "2",
            ),
            quick=(
                "--quick",
                "--batch",
                "4",
                "--classes",
                "50",
                "--base",
                "amp",
                "--amp",
                "bf16",
                "--variants",
                "compile",
                "--repeats",
                "1",
                "--warmup",
                "0",
            ),
            headline=TRAIN_COMPILE_HEADLINE,
        ),
    ),
    Section(
        "inference",
        70,
        Spec(
            "inference",
            "inference",
            "bench_inference.py",
            full=(
                "--models",
                "iresnet50",
                "mobilefacenet",
                "--batches",
                "1",
                "64",
                "--backends",
                "eager",
                "compile",
                "ort",
                "trt",
                "--repeats",
                "10",
                "--warmup",
                "2",
            ),
            quick=(
                "--models",
                "iresnet_tiny",
                "--batches",
                "1",
                "2",
                "--backends",
                "eager",
                "ort",
                "--repeats",
                "1",
                "--warmup",
                "0",
            ),
            headline=INFERENCE_HEADLINE,
        ),
    ),
)


GOALS_SECTION = Section("goals", 0, headline=GOALS_HEADLINE)  # computed from the sections' rows: runs nothing
SECTION_NAMES = tuple(s.name for s in SECTIONS) + (GOALS_SECTION.name,)


def area_of(name: str) -> str:
    """The area a benchmark or GPU section belongs to (``other`` for a name no spec declares)."""
    spec = next((s for s in SPECS if s.name == name), None)
    if spec is not None:
        return spec.area
    return next((s.area for s in (*SECTIONS, GOALS_SECTION) if s.name == name), "other")


def declared_headlines() -> list[tuple[Headline, tuple[str, ...]]]:
    """Every headline the specs and sections declare, by ``order``, with the benchmarks declaring it
    (in declaration order, each name once: the first declaration of a name counts)."""
    named: dict[str, Headline | None] = {s.name: s.headline for s in SPECS}
    for section in (*SECTIONS, GOALS_SECTION):
        named.setdefault(section.name, section.declared_headline)
    grouped: dict[Headline, list[str]] = {}
    for name, headline in named.items():
        if headline is not None:
            grouped.setdefault(headline, []).append(name)
    return sorted(((h, tuple(names)) for h, names in grouped.items()), key=lambda hn: hn[0].order)
