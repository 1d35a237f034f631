"""One schema for every profile in `params/`: validated before any work starts.

A profile is a YAML file whose keys mirror the dataclasses below. Loading it checks every key, type and
value and stops with a message that names the key, what was given and what is allowed, so a typo in a
profile never runs for ten minutes before failing. Every numeric field carries its allowed values in its
annotation (`Positive`, `Count`, `Annotated[float, Range(0, 1)]`, ...), checked by one rule; a new field
declares its own (tests/test_params.py fails on one that does not). Notebooks get their parameters from
here, never from scattered constants.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import types
import typing
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml

from tinystories_lib.errors import KitError

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS_DIR = REPO_ROOT / "params"


class ParamsError(KitError, ValueError):
    """A profile that cannot run: the message names the key and what is allowed."""


@dataclass(frozen=True)
class Range:
    """The values a numeric setting allows (a list's: each item's), in its annotation (`Annotated[int,
    Range(1)]`), so every field is checked by one rule before any work; `note` says what edge values mean."""

    lo: float
    hi: float | None = None
    open_lo: bool = False  # lo itself is refused
    open_hi: bool = False
    note: str = ""

    def refuses(self, v) -> str | None:
        if (v > self.lo if self.open_lo else v >= self.lo) and (
                self.hi is None or (v < self.hi if self.open_hi else v <= self.hi)):
            return None
        if self.hi is None:
            allowed = f"{'above' if self.open_lo else 'at least'} {self.lo}"
        else:
            allowed = f"in {'(' if self.open_lo else '['}{self.lo}, {self.hi}{')' if self.open_hi else ']'}"
        return f"must be {allowed}{f' ({self.note})' if self.note else ''}, got {v}"


@dataclass(frozen=True)
class NonEmpty:
    """A list setting that needs at least one entry."""

    def refuses(self, v) -> str | None:
        return None if v else "needs at least one entry, got []"


Positive = Annotated[int, Range(1)]
Count = Annotated[int, Range(0)]  # 0 allowed: what it means is said beside each field
PositiveFloat = Annotated[float, Range(0, open_lo=True)]
NonNegative = Annotated[float, Range(0)]
Temperature = Annotated[float, Range(0, note="0 = greedy")]
TopP = Annotated[float, Range(0, 1, open_lo=True, note="1 = off")]
USD = Annotated[float, Range(0, note="US dollars")]
Fraction = Annotated[float, Range(0, 1)]
AllIfZero = Annotated[int, Range(0, note="0 = all")]


@dataclass
class EndpointParams:
    """An OpenAI-compatible endpoint (OpenAI, Azure, vLLM, Ollama, llama.cpp). The key is never here:
    it is read from the environment variable named by `api_key_env`."""

    base_url: str | None = None  # None = OpenAI
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"
    azure_api_version: str | None = None  # set for Azure OpenAI (base_url = the resource endpoint)
    max_concurrency: Positive = 16
    timeout_s: PositiveFloat = 60.0
    price_per_1m_input: USD = 0.15  # for the cost estimate and the budget cap
    price_per_1m_output: USD = 0.6
    temperature: NonNegative | None = None
    max_tokens: Positive | None = None
    budget_usd: USD | None = None  # stop issuing requests past this spend
    batch_api: bool = False  # the Batch API: half the price, results within 24 h
    http_client: Literal["auto", "aiohttp", "httpx"] = "auto"  # auto: aiohttp when installed (less CPU a request)
    processes: Positive = 1  # online story generation: client processes sharing the requests (hundreds a second)
    # The request field of the output cap: auto = max_completion_tokens for OpenAI's reasoning models (o1, o3,
    # gpt-5...), max_tokens otherwise, switching once if the server refuses max_tokens.
    token_param: Literal["auto", "max_tokens", "max_completion_tokens"] = "auto"
    # batch_api: each round goes as input files under these limits (OpenAI's per-file 50,000 requests and
    # 200 MB; estimated prompt tokens under the model's enqueued-token limit for the organization's tier).
    batch_max_requests: Positive = 50_000
    batch_max_bytes: Positive = 200_000_000
    batch_max_enqueued_tokens: Positive = 1_000_000

    # How the requests are made, not what they ask: left out of artifact keys (Params.section_hash), so a
    # run stopped by its budget resumes into the same files when the budget, concurrency or client change.
    HOW_NOT_WHAT: ClassVar[tuple[str, ...]] = (
        "api_key_env", "max_concurrency", "timeout_s", "price_per_1m_input", "price_per_1m_output", "budget_usd",
        "batch_api", "http_client", "processes", "token_param", "batch_max_requests", "batch_max_bytes",
        "batch_max_enqueued_tokens",
    )


@dataclass
class DataParams:
    # auto: real TinyStories from the hub where it can be reached, else from `paths` (and `val_paths`) where
    # those files exist, else the storyteller stand-in (said so)
    source: Literal["auto", "storyteller", "llm", "files", "hub"] = "storyteller"
    n_stories: AllIfZero = 20000  # storyteller: how many to write; files/hub: the first N (0 = all)
    paths: list[str] = field(default_factory=list)  # source=files: .txt/.json/.jsonl/.parquet files or dirs
    hub_name: str = "roneneldan/TinyStories"
    hub_split: str = "train"
    hub_data_files: str | None = None  # e.g. "TinyStoriesV2-GPT4-train.txt" for the GPT-4-only V2 corpus
    hub_revision: str | None = None  # a commit or tag of the hub dataset, to pin what is downloaded
    # Where validation stories come from: "split" holds out `val_fraction` of the source; "files" reads
    # `val_paths` (e.g. the official TinyStories-valid.txt); "hub" reads `val_hub_split` (or the file
    # `val_hub_data_files`) of `hub_name`. A training story whose text is also a validation story is dropped.
    val_source: Literal["split", "files", "hub"] = "split"
    val_paths: list[str] = field(default_factory=list)
    val_hub_split: str = "validation"
    val_hub_data_files: str | None = None  # e.g. "TinyStoriesV2-GPT4-valid.txt"
    val_limit: AllIfZero = 0  # the first N validation stories (0 = all)
    val_fraction: Annotated[float, Range(0, 0.5, open_lo=True, open_hi=True)] = 0.05
    min_chars: Count = 50
    max_chars: Positive = 4000
    # Cleaning real corpora (each drop counted, with examples, in the corpus artifact's report):
    fix_mojibake: bool = True  # repair text decoded with the wrong codec ("â€™" -> "’") with ftfy
    gpt4_only: bool = False  # keep only stories whose known source is GPT-4 (TinyStories_all_data's `source`)
    drop_fragments: bool = True  # drop a story that does not end with a sentence end (cut-off text)
    near_duplicates: Fraction = 0.0  # drop a story this similar (MinHash Jaccard) to one kept before it; 0 = off
    txt_separator: Literal["endoftext", "blank_line"] = "endoftext"  # how a .txt file separates stories
    llm: EndpointParams = field(default_factory=EndpointParams)  # source=llm: who writes the stories
    llm_summaries: bool = False  # source=llm: a second call writes a one-line summary (TinyStories-Instruct)
    compare_paths: list[str] = field(default_factory=list)  # real TinyStories files shown beside the corpus (01)
    compare_limit: Count = 3000
    # source=llm: the data design the prompts come from: a shipped design's name (tinystories, customer_service)
    # or a design folder (a path from the repository root): template, word list, features, topics
    # (tinystories_lib/stories/prompts.py says what each file holds).
    design: str = "tinystories"

    # compare_*: notebook 01's display only. design: where the files are; what they say is keyed by key_extra.
    HOW_NOT_WHAT: ClassVar[tuple[str, ...]] = ("compare_paths", "compare_limit", "design")

    def design_dir(self) -> Path:
        from tinystories_lib.stories.prompts import design_path

        return design_path(self.design, REPO_ROOT)

    def prompt_design(self):
        """The design of `design`, loaded and checked (a `prompts.Design`); `DesignError` says what is wrong."""
        from tinystories_lib.stories import prompts

        folder = self.design_dir()
        same = folder.resolve() == (prompts.DESIGNS_DIR / prompts.DEFAULT_DESIGN).resolve()
        return prompts.default_design() if same else prompts.load_design(folder)

    def key_extra(self) -> dict:
        """What the design's files say, for artifact keys (`_what`): its content digest, so editing a word list
        regenerates the LLM stories and what is built from them; nothing for the paper's TinyStories design,
        whose keys stay those from before designs were files."""
        from tinystories_lib.stories.prompts import TINYSTORIES_DIGEST

        digest = self.prompt_design().digest
        return {} if digest == TINYSTORIES_DIGEST else {"design_digest": digest}


@dataclass
class TokenizerParams:
    kind: Literal["bpe", "gpt-neo-top-k"] = "bpe"
    # bpe: trained size; gpt-neo-top-k: how many of GPT-Neo's tokens to keep
    vocab_size: Annotated[int, Range(1, 65535, note="token shards are uint16")] = 2048
    gpt2_files: str | None = None  # dir with vocab.json + merges.txt (gpt-neo-top-k; None: from the hub)
    # How many training stories the tokenizer is fitted on (bpe: trained; gpt-neo-top-k: its tokens counted):
    # a larger training split is sampled, deterministically by story id (about 180 MB of TinyStories text
    # at the default, a few minutes of BPE training); a smaller one is used whole. 0 = all, however many.
    train_stories: AllIfZero = 200_000

    # gpt2_files: where GPT-2's BPE is read from, not what it is. train_stories: in the token stage's key
    # only where the training split is larger (stages.shards), so that it changes no smaller corpus's key.
    HOW_NOT_WHAT: ClassVar[tuple[str, ...]] = ("gpt2_files", "train_stories")


@dataclass
class ModelParams:
    hidden: Positive = 128
    layers: Positive = 4
    heads: Positive = 4
    context: Annotated[int, Range(2)] = 256
    window: Positive = 256  # local-attention window (the paper: 256)
    dropout: Annotated[float, Range(0, 1, open_hi=True)] = 0.0


@dataclass
class TrainParams:
    batch_size: Positive = 16
    grad_accum: Positive = 1
    max_steps: Positive = 600
    lr: PositiveFloat = 3e-3
    min_lr: NonNegative = 3e-4
    warmup_steps: Count = 50
    weight_decay: NonNegative = 0.1
    beta2: Annotated[float, Range(0, 1, open_hi=True)] = 0.99
    grad_clip: Annotated[float, Range(0, note="0 = off")] = 1.0
    eval_interval: Positive = 100
    eval_batches: Positive = 10
    checkpoint_steps: list[Positive] = field(default_factory=list)  # extra checkpoints kept for emergence
    threads: Annotated[int, Range(0, note="0 = all cores")] = 0  # torch threads on CPU; 0 = all cores
    compile: bool = False
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # On a CPU, matmuls in bf16 under autocast (attention and softmax stay fp32), as GPUs always train
    # here. Fast only on CPUs with AMX or AVX512-BF16; part of a model's key, since it changes the result.
    cpu_bf16: bool = False

    HOW_NOT_WHAT: ClassVar[tuple[str, ...]] = ("threads", "device", "compile")  # speed only: not in a model's key


@dataclass
class SweepParams:
    hidden: Annotated[list[Positive], NonEmpty()] = field(default_factory=lambda: [32, 64])
    layers: Annotated[list[Positive], NonEmpty()] = field(default_factory=lambda: [1, 2])
    heads: Positive = 4
    max_steps: Positive = 300
    lr: PositiveFloat = 3e-3
    # One learning rate per `hidden` entry (same order), for widths that train best at different rates;
    # empty = `lr` for every width. A heads-study width not in `hidden` uses `lr`.
    lr_per_hidden: list[PositiveFloat] = field(default_factory=list)
    heads_study: list[Positive] = field(default_factory=list)  # head counts tried at one fixed shape (03)
    heads_study_shape: list[Positive] = field(default_factory=lambda: [64, 2])  # [hidden, layers] of that study
    # Models trained at once, each in its own process: 0 = one per visible CUDA device (one at a time
    # without a GPU); N > 1 on a CPU splits the cores between N jobs (threads = cores // N each).
    jobs: Annotated[int, Range(0, note="0 = one per CUDA device")] = 1

    HOW_NOT_WHAT: ClassVar[tuple[str, ...]] = ("jobs",)


@dataclass
class SampleParams:
    n_samples: Count = 6
    max_new_tokens: Positive = 200
    temperature: Temperature = 0.8
    top_k: Annotated[int, Range(0, note="0 = off")] = 0
    top_p: TopP = 0.9


@dataclass
class GradeParams:
    judge: Literal["offline", "llm"] = "offline"
    # The evaluation set: "kit" (shipped with the package), "paper" (the paper's `Evaluation prompts.yaml`
    # from the hub, cached), or the path of a YAML file in either format (relative to the repository root).
    prompts: str = "kit"
    n_prompts: AllIfZero = 30  # how many of the set's prompts, every kind represented (0 = all)
    completions_per_prompt: Positive = 1
    temperature: Temperature = 0.0
    max_new_tokens: Positive = 120
    n_probes: Count = 200  # exact context-tracking probes cut from held-out storyteller stories (0 = none)
    # Published models scored, completed and graded beside the profile's (notebooks 03 and 04): llama2.c
    # checkpoints (a .bin, its tokenizer beside it) or Hugging Face GPT-Neo ids/dirs (roneneldan/TinyStories-1M).
    reference_models: list[str] = field(default_factory=list)
    # judge: llm grades each completion this many times (each repeat a cached conversation of its own) and
    # uses the mean; notebook 04 shows how far the repeats agree. Repeats differ only where the judge's
    # sampling does (grade.llm.temperature; at 0 only the server's own nondeterminism).
    judge_repeats: Positive = 1
    llm: EndpointParams = field(default_factory=lambda: EndpointParams(model="gpt-4o", price_per_1m_input=2.5,
                                                                        price_per_1m_output=10.0))


@dataclass
class DiversityParams:
    """Notebook 05: is the model creative or copying? Defaults keep the smoke profile's notebook near a minute
    on 2 cores: every nearest-story search scans part of the training set, so counts stay small."""

    n_prompts: Positive = 8  # evaluation beginnings (general stories first) completed per model
    completions_per_prompt: Positive = 1
    max_new_tokens: Positive = 120
    temperature: Temperature = 1.0
    top_p: TopP = 1.0  # 1.0 = off: plain temperature sampling
    baseline_stories: Positive = 40  # training stories compared against the rest of the training set
    max_candidates: Positive = 2000  # stories scored per nearest-story search; above it the answer is approximate
    pairs_shown: Count = 3  # most-copied completions printed beside their nearest training story
    manipulations: Count = 10  # validation beginnings per kind (name, object) with that word swapped
    manipulation_tokens: Positive = 40  # greedy continuation length for the manipulation check


@dataclass
class InterpretParams:
    """Notebook 06: attention heads and MLP neurons (thresholds: see `tinystories_lib.evals.interpret`)."""

    n_stories: Positive = 200  # validation stories scanned for top-activating contexts and neuron selectivity
    head_stories: Positive = 40  # validation stories behind the head scores (each gives hundreds of queries)
    n_neurons: Positive = 8  # neurons shown per layer
    contexts_per_neuron: Positive = 5
    neuron_layers: Positive = 2  # the last MLP layers of the main model analysed
    selectivity_contexts: Positive = 20  # top contexts per neuron behind the selectivity scores
    recent_tokens: Positive = 3  # a distance head attends to the last this-many tokens (the query included)
    distance_min: Fraction = 0.3  # attention mass on those tokens that makes a head a "distance" head
    entity_lift_min: PositiveFloat = 2.0  # entity mass over its uniform share that makes a head an "entity" head
    map_tokens: Positive = 40  # story tokens drawn in the attention-map figure
    # The 1-layer model whose heads are read: the sweep's widest 1-layer shape trained for this many steps
    # (the sweep's learning rate), since attention specialises later than the loss falls (0 = the sweep's
    # own 1-layer model, as the sweep trained it).
    one_layer_steps: Annotated[int, Range(0, note="0 = the sweep's model")] = 0


@dataclass
class InstructParams:
    """Notebook 07: TinyStories-Instruct, and the paper's out-of-distribution test: one combination of
    instruction fields (`held_out_pair`) never appears together in a training record, then is asked for."""

    hidden: Positive = 128
    layers: Positive = 4  # >= 3: layers alternate global/local; copying from the header needs a 2nd global layer
    heads: Positive = 4
    max_steps: Positive = 500
    n_eval: Positive = 30  # instruction sets graded per condition (in-distribution, out-of-distribution)
    max_records: AllIfZero = 0  # training stories made into records (0 = all); a short run reads only a few
    held_out_pair: list[str] = field(default_factory=lambda: ["summary", "words"])  # of summary, features, words
    max_new_tokens: Positive = 200  # story length asked of the model (also capped by model.context)
    temperature: Temperature = 0.7  # sampling temperature of the instructed stories
    # Summaries for stories that have none (real TinyStories files): "none" leaves the field out; "llm"
    # asks the endpoint of `data.llm` for one sentence per story (paid once, kept under runs/<p>/summaries/).
    summaries: Literal["none", "llm"] = "none"


@dataclass
class QualityParams:
    """Notebook 08: does data quality matter? One model shape and one token budget for every corpus (the
    clean corpus, the storyteller stand-in, degraded controls, a pool filtered the phi-1 way and the same
    pool unfiltered), each scored on the profile's validation text in bits per byte."""

    # The model trained on each corpus: each corpus is cut to `train_tokens` tokens of the profile's
    # tokenizer, of which a model sees max_steps x batch_size x context.
    hidden: Positive = 32
    layers: Positive = 2
    heads: Positive = 2
    context: Annotated[int, Range(2)] = 128
    window: Positive = 64
    batch_size: Positive = 16
    max_steps: Positive = 250
    lr: PositiveFloat = 6e-3
    eval_interval: Positive = 50  # steps between validation points of a curve (at least five a curve)
    eval_batches: Positive = 4
    train_tokens: Positive = 60_000  # unique tokens per corpus; a corpus that has fewer is used whole (said so)
    val_stories: AllIfZero = 300  # the first N validation stories: the one text every model is scored on (0 = all)
    # The degraded controls.
    typo_rate: Annotated[float, Range(0, 0.5, open_lo=True)] = 0.03  # share of letters swapped or dropped
    unique_fraction: Annotated[float, Range(0, 1, open_lo=True, open_hi=True)] = 0.25  # repeated: share kept unique
    # The phi-1 filter: a pool of the clean stories with a share degraded (half shuffled, half typos), a
    # sample of it labelled by the annotator (`grade.judge`: the offline grader or the LLM judge), a
    # classifier trained on the labels, the pool filtered with it.
    pool_noise: Annotated[float, Range(0, 1, open_hi=True)] = 0.3
    annotator_stories: Annotated[int, Range(8)] = 400  # offline annotator: clean stories held out of the pool to build it
    n_annotated: Annotated[int, Range(10)] = 300
    label_threshold: Annotated[float, Range(0, 10)] = 8.0  # a story is good when its mean grade (0..10) reaches this
    test_fraction: Annotated[float, Range(0, 1, open_lo=True, open_hi=True)] = 0.3  # labels held out to score the classifier
    classifier: Literal["logistic", "forest"] = "logistic"  # forest: phi-1's random forest on an embedding
    keep_threshold: Fraction = 0.5  # keep a story when the classifier's P(good) reaches this
    storyteller: bool = True  # also train on the storyteller stand-in (real corpora only)
    # Models trained at once, as `sweep.jobs` (small models use two CPU processes better than two threads).
    jobs: Annotated[int, Range(0, note="0 = one per CUDA device")] = 2

    HOW_NOT_WHAT: ClassVar[tuple[str, ...]] = ("jobs",)

    def __post_init__(self):
        if self.hidden % self.heads:
            raise ParamsError(f"quality.hidden: {self.hidden} is not divisible by quality.heads={self.heads}")


@dataclass
class Params:
    profile: str = "smoke"
    description: str = ""
    seed: Annotated[int, Range(0, 2**32 - 1, note="numpy's seeds")] = 1337
    data: DataParams = field(default_factory=DataParams)
    tokenizer: TokenizerParams = field(default_factory=TokenizerParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    sweep: SweepParams = field(default_factory=SweepParams)
    sample: SampleParams = field(default_factory=SampleParams)
    grade: GradeParams = field(default_factory=GradeParams)
    diversity: DiversityParams = field(default_factory=DiversityParams)
    interpret: InterpretParams = field(default_factory=InterpretParams)
    instruct: InstructParams = field(default_factory=InstructParams)
    quality: QualityParams = field(default_factory=QualityParams)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def section_hash(self, *sections: str, extra: Any = None) -> str:
        """Short hash of some sections: the key under which a stage's artifacts are stored, so a
        stage is recomputed exactly when a parameter it depends on changes (fields a class lists in
        HOW_NOT_WHAT, such as a concurrency or a budget, change how a stage runs, not what it makes)."""
        payload = {s: _what(getattr(self, s)) for s in sections} | {"seed": self.seed, "extra": extra}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]

    def hash(self) -> str:
        d = self.to_dict()
        d.pop("description")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def resolve_path(path: str | Path) -> Path:
    """A path from a profile: absolute, or relative to the repository root."""
    return Path(path) if Path(path).is_absolute() else REPO_ROOT / path


def _what(obj: Any) -> Any:
    """A parameters dataclass as plain data for artifact keys, without its HOW_NOT_WHAT fields."""
    if dataclasses.is_dataclass(obj):
        skip = getattr(type(obj), "HOW_NOT_WHAT", ())
        what = {f.name: _what(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.name not in skip}
        # A field naming files (data.design) is keyed by what the files say: the class's key_extra() adds it.
        return what | (obj.key_extra() if hasattr(obj, "key_extra") else {})
    if isinstance(obj, list | tuple):
        return [_what(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _what(v) for k, v in obj.items()}
    return obj


# ---------------------------------------------------------------- validation


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


_SCIENTIFIC = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")
_SECRET_WORDS = ("key", "token", "secret", "password", "passwd", "credential", "credentials")


def is_secret(key: str) -> bool:
    """A setting whose value may be a credential: a word of its name ends in key, token, secret or password
    (api_key, hf_token, apiKey, api_key_env); a count of tokens (max_tokens) is not."""
    return any(w.endswith(_SECRET_WORDS) for w in re.split(r"[^a-z0-9]+", str(key).lower()))


def shown(key: str, value: Any) -> str:
    """`value` as a message may show it: a secret's never (nor one inside a mapping under its own key)."""
    if is_secret(key):
        return "<not shown: a secret>"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {shown(k, v)}" for k, v in value.items()) + "}"
    return repr(value)


def _coerce(value, tp, key: str, default: Any = None):
    """Check `value` against the annotation `tp`; return it (ints are accepted where floats are). A
    mapping for a nested section fills in that field's own default (`default`), key by key."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ParamsError(f"{key}: expected a mapping of {tp.__name__} keys, got {shown(key, value)}")
        return _build(tp, value, key, default)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ParamsError(f"{key}: {shown(key, value)} is not allowed; choose one of {_type_name(tp)}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ParamsError as e:
                errors.append(str(e))
        raise ParamsError(f"{key}: expected {_type_name(tp)}, got {shown(key, value)}")
    if origin is list:
        if not isinstance(value, list):
            raise ParamsError(f"{key}: expected {_type_name(tp)}, got {shown(key, value)}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 (PyYAML) reads 1e-3 as a string; it means the number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{key}: expected a number, got {shown(key, value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key}: expected an integer, got {shown(key, value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{key}: expected true or false, got {shown(key, value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{key}: expected a string, got {shown(key, value)}")
        return value
    raise TypeError(f"unsupported annotation {tp} for {key}")


def _field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _build(cls, data: dict, prefix: str = "", base: Any = None):
    """`cls` from a mapping of some of its keys; the others keep their values in `base` (the field's
    default, for a nested section: grade.llm's model and prices stay gpt-4o's when only its
    concurrency is given), or the class defaults."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    allowed = list(fields)
    kwargs = {k: getattr(base, k) for k in allowed if fields[k].init} if base is not None else {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in allowed and is_secret(k):
            raise ParamsError(f"'{key}': API keys never go in a profile, nor other secrets (the value is not shown); "
                              "export the key in an environment variable and name that variable in "
                              "'api_key_env' (default OPENAI_API_KEY)")
        if k not in allowed:
            close = difflib.get_close_matches(str(k), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            where = f"in '{prefix}'" if prefix else "at the top level"
            raise ParamsError(f"unknown key '{key}'{hint}; allowed keys {where}: {', '.join(allowed)}")
        default = getattr(base, k) if base is not None else _field_default(fields[k])
        kwargs[k] = _coerce(v, hints[k], key, default if dataclasses.is_dataclass(default) else None)
    return cls(**kwargs)


def _check_ranges(obj, prefix: str = "") -> None:
    """Every setting of a parameters dataclass against the rules (Range, NonEmpty) its annotation carries."""
    hints = typing.get_type_hints(type(obj), include_extras=True)
    for f in dataclasses.fields(obj):
        _check_rules(getattr(obj, f.name), hints[f.name], f"{prefix}{f.name}")


def _check_rules(value, hint, key: str) -> None:
    if dataclasses.is_dataclass(value):
        return _check_ranges(value, f"{key}.")
    if value is None:
        return
    if typing.get_origin(hint) is Annotated:
        hint, *rules = typing.get_args(hint)
        for rule in rules:
            if problem := rule.refuses(value):
                raise ParamsError(f"{key}: {problem}")
    if typing.get_origin(hint) is list:
        for i, v in enumerate(value):
            _check_rules(v, typing.get_args(hint)[0], f"{key}[{i}]")
    elif typing.get_origin(hint) in (typing.Union, types.UnionType):  # value is not None: its other arm
        for arm in typing.get_args(hint):
            if arm is not type(None):
                _check_rules(value, arm, key)


def _check_values(p: Params) -> None:
    """Constraints between values that types and ranges alone cannot express."""

    def need(ok: bool, key: str, msg: str):
        if not ok:
            raise ParamsError(f"{key}: {msg}")

    _check_ranges(p)
    need(p.tokenizer.vocab_size >= 260 or p.tokenizer.kind != "bpe", "tokenizer.vocab_size",
         f"a byte-level BPE needs at least 260 tokens (256 bytes + specials), got {p.tokenizer.vocab_size}")
    need(p.model.hidden % p.model.heads == 0, "model.hidden",
         f"hidden size {p.model.hidden} is not divisible by model.heads={p.model.heads}; "
         f"allowed heads for this size: {[h for h in range(1, 33) if p.model.hidden % h == 0]}")
    for h in p.sweep.hidden:
        need(h % p.sweep.heads == 0, "sweep.heads",
             f"{p.sweep.heads} heads do not divide sweep.hidden {h}; choose heads that divide every hidden size "
             f"in {p.sweep.hidden}: {[d for d in range(1, min(p.sweep.hidden) + 1) if all(x % d == 0 for x in p.sweep.hidden)]}")
    need(len(p.sweep.heads_study_shape) == 2, "sweep.heads_study_shape", "must be [hidden, layers]")
    for h in p.sweep.heads_study:
        need(p.sweep.heads_study_shape[0] % h == 0, "sweep.heads_study",
             f"{h} heads do not divide hidden size {p.sweep.heads_study_shape[0]}")
    need(p.train.min_lr <= p.train.lr, "train.min_lr",
         f"must be at most train.lr={p.train.lr} (the schedule decays from lr to min_lr), got {p.train.min_lr}")
    need(p.train.warmup_steps < p.train.max_steps, "train.warmup_steps",
         f"must be below train.max_steps={p.train.max_steps}, got {p.train.warmup_steps}")
    need(p.data.val_source != "files" or bool(p.data.val_paths), "data.val_paths",
         "data.val_source files needs data.val_paths: the files holding the validation stories")
    for path in p.data.val_paths if p.data.val_source == "files" else []:  # with source auto, a fallback
        need(resolve_path(path).exists(), "data.val_paths", f"{path} not found (paths are from {REPO_ROOT})")
    for key, llm in (("data.llm", p.data.llm), ("grade.llm", p.grade.llm)):
        need(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", llm.api_key_env) is not None, f"{key}.api_key_env",
             "must name an environment variable (letters, digits, _) such as OPENAI_API_KEY, got a value not shown "
             "here; if it is the key itself, export it in such a variable and name the variable instead")
    need(p.data.n_stories > 0 or p.data.source not in ("storyteller", "llm"), "data.n_stories",
         f"data.source {p.data.source} writes n_stories stories: must be at least 1, got 0")
    need(p.grade.prompts in ("kit", "paper") or resolve_path(p.grade.prompts).is_file(), "grade.prompts",
         f"{p.grade.prompts!r} is neither kit, paper nor an existing file (paths are from {REPO_ROOT})")
    need(p.grade.completions_per_prompt == 1 or p.grade.temperature > 0, "grade.completions_per_prompt",
         f"{p.grade.completions_per_prompt} completions per prompt with grade.temperature 0 (greedy) would be "
         "identical; set grade.temperature > 0 or completions_per_prompt: 1")
    need(p.data.source != "files" or bool(p.data.paths), "data.paths",
         "data.source is 'files' but no paths are given; list .txt/.json/.jsonl/.parquet files or directories")
    need(not p.sweep.lr_per_hidden or len(p.sweep.lr_per_hidden) == len(p.sweep.hidden), "sweep.lr_per_hidden",
         f"needs one learning rate per sweep.hidden entry ({len(p.sweep.hidden)}), got {len(p.sweep.lr_per_hidden)}")
    need(p.data.min_chars < p.data.max_chars, "data.min_chars", "must be below data.max_chars")
    _check_design(p.data)
    i = p.instruct
    fields_ok = {"summary", "features", "words"}
    need(len(i.held_out_pair) == 2 and len(set(i.held_out_pair)) == 2 and set(i.held_out_pair) <= fields_ok,
         "instruct.held_out_pair", f"must be two different fields of {sorted(fields_ok)}, got {i.held_out_pair}")
    need(i.hidden % i.heads == 0, "instruct.hidden", f"hidden size {i.hidden} is not divisible by instruct.heads={i.heads}")


def _check_design(d: DataParams) -> None:
    """`data.design`: its files exist and parse, the template's placeholders match the word list, features
    and topics, and the design can make `n_stories` distinct prompts."""
    from tinystories_lib.stories.prompts import TINYSTORIES_DIGEST, DesignError

    try:
        design = d.prompt_design()
    except DesignError as e:
        raise ParamsError(f"data.design: {e}") from None
    if design.digest != TINYSTORIES_DIGEST and d.source != "llm":
        raise ParamsError(f"data.design: {d.design!r} makes prompts for data.source llm only (the storyteller writes "
                          f"TinyStories, and hub or file corpora come without prompts), got data.source "
                          f"{d.source!r}; set data.source: llm, or leave data.design out")
    if d.source == "llm" and d.n_stories > (capacity := design.capacity()):
        raise ParamsError(f"data.n_stories: the {design.name} design makes only {capacity:,} distinct prompts "
                          f"(its words, feature sets and topics), got {d.n_stories:,}; add words or topics to "
                          f"{design.path}, or ask for fewer stories")


def from_dict(data: dict | None, source: str = "<dict>") -> Params:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: a profile must be a YAML mapping of sections, got {type(data).__name__}")
    try:
        p = _build(Params, data)
        _check_values(p)
    except ParamsError as e:
        raise ParamsError(f"{source}: {e}") from None
    return p


def apply_overrides(data: dict, overrides: dict | None) -> dict:
    """Apply {"train.max_steps": 10, ...} (dotted keys) or nested dicts onto a profile mapping."""
    out = json.loads(json.dumps(data))  # deep copy of plain YAML data
    for key, value in (overrides or {}).items():
        node, parts = out, str(key).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ParamsError(f"override '{key}': '{part}' is not a section")
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]] = apply_overrides(node[parts[-1]], value)
        else:
            node[parts[-1]] = value
    return out


def profile_path(name_or_path: str | Path) -> Path:
    """A profile name (`params/NAME.yaml`) or a YAML path: as given, else from the repository root (so
    `params/paper.yaml` works from any directory)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        return p if p.exists() or p.is_absolute() or not (REPO_ROOT / p).exists() else REPO_ROOT / p
    return PARAMS_DIR / f"{name_or_path}.yaml"


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML silently keeps the last)."""

    def construct_mapping(self, node, deep=False):
        lines = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: its keys may be overridden
                continue
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            if not isinstance(key, Hashable):
                continue  # a list as a key: refused below
            if key in lines:
                raise ParamsError(f"line {line}: key '{key}' is given twice in one section (also on line "
                                  f"{lines[key]}) and only the last would count; keep one")
            lines[key] = line
        return super().construct_mapping(node, deep)


def read_yaml(text: str) -> Any:
    """Parse YAML text as profiles are parsed (safe, duplicate keys refused with their line)."""
    return yaml.load(text, _UniqueKeyLoader)


def _read_profile(path: Path) -> Any:
    """The YAML of a profile file; any failure names the file and says what to do."""
    example = "params/smoke.yaml is an example"
    if path.is_dir():
        raise ParamsError(f"{path} is a directory; give a profile's YAML file or name ({example})")
    try:
        return read_yaml(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.reader.ReaderError):
        raise ParamsError(f"{path}: not a text file; a profile is a YAML text file ({example})") from None
    except OSError as e:
        raise ParamsError(f"{path}: cannot be read ({e.strerror}); check the path and its permissions") from None
    except ParamsError as e:
        raise ParamsError(f"{path}, {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ParamsError(f"{path}{where}: not valid YAML ({problem}); fix that line ({example})") from None


def load(name_or_path: str | Path = "smoke", overrides: dict | None = None) -> Params:
    """Load and validate a profile by name (`params/NAME.yaml`) or path, with optional overrides."""
    path, given = profile_path(name_or_path), Path(name_or_path)
    if not path.exists() and given.suffix and given.is_file():
        use = " (a data file: list it in data.paths of a profile, with data.source: files)" if given.suffix in (
            ".txt", ".json", ".jsonl", ".parquet") else ""
        raise ParamsError(f"{given} is not a profile{use}: a profile is a YAML file ending in .yaml or .yml, "
                          f"or a name in params/: {', '.join(available_profiles())}")
    if not path.exists():
        raise ParamsError(f"no profile '{name_or_path}' (looked for {path}); available: {', '.join(available_profiles())}")
    data = _read_profile(path) or {}
    if isinstance(data, dict):
        data.setdefault("profile", path.stem)
    if not overrides or not isinstance(data, dict):
        return from_dict(data, str(path))
    try:
        return from_dict(apply_overrides(data, overrides), str(path))
    except ParamsError as e:
        try:
            from_dict(data, str(path))
        except ParamsError:
            raise e from None  # the file itself is invalid
        # The profile is valid on its own: the override is to blame, so name it rather than the file.
        given = ", ".join(f"{k}={shown(k, v)}" for k, v in overrides.items())
        raise ParamsError(f"override ({given}) on {path}: {str(e).removeprefix(f'{path}: ')}") from None
