"""Evaluation prompts: story beginnings for models to complete.

Three sources, one record type (`EvalPrompt`):
- our own set shipped in the package (`data/eval_prompts.yaml`, `load_eval_prompts()`): general story
  beginnings plus knowledge, reasoning and context-tracking probes with acceptable answers;
- the paper's hand-written probe examples (`load_paper_probes()`), kept apart from our set;
- the paper's own evaluation file `Evaluation prompts.yaml` from the roneneldan/TinyStories dataset repo
  (`fetch_paper_eval_yaml()` downloads it, `load_paper_eval_yaml()` reads it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from tinystories_lib.stories.words import words

PROMPT_KINDS = ("story", "knowledge", "reasoning", "context_tracking")

PAPER_REPO_ID = "roneneldan/TinyStories"
PAPER_EVAL_FILENAME = "Evaluation prompts.yaml"


@dataclass
class EvalPrompt:
    """A story beginning. `kind` is one of PROMPT_KINDS; `answers` lists words or short phrases any one of
    which makes a probe's completion right (empty for general stories)."""

    id: str
    text: str
    kind: str = "story"
    answers: list[str] = field(default_factory=list)

    def answer_found(self, completion: str, within_words: int = 12) -> bool | None:
        """Whether one of `answers` appears as whole words among the first `within_words` words of the
        completion (case-insensitive). None when the prompt has no answers to check."""
        if not self.answers:
            return None
        head = _words(completion)[:within_words]
        return any(_contains(head, _words(a)) for a in self.answers)


def _words(text: str) -> list[str]:
    """Lowercased words without punctuation, so "band-aid" matches "band aid" too; numbers count, an
    answer may be one."""
    return words(text, digits=True)


def _contains(words: list[str], phrase: list[str]) -> bool:
    n = len(phrase)
    return n > 0 and any(words[i : i + n] == phrase for i in range(len(words) - n + 1))


# --- our shipped set -----------------------------------------------------------------------------


def _shipped_yaml() -> dict:
    text = resources.files("tinystories_lib.evals").joinpath("data/eval_prompts.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _read_yaml(path: str | Path | None) -> dict:
    if path is None:
        return _shipped_yaml()
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _parse_entries(entries: list, where: str) -> list[EvalPrompt]:
    """Validate entries of our YAML format: each needs an id, a text and a known kind; ids are unique."""
    prompts, seen = [], set()
    for i, e in enumerate(entries or []):
        if not isinstance(e, dict) or not e.get("id") or not str(e.get("text") or "").strip():
            raise ValueError(f"{where}[{i}]: each entry needs an 'id' and a non-empty 'text', got {e!r}")
        kind = e.get("kind", "story")
        if kind not in PROMPT_KINDS:
            raise ValueError(f"{where}[{i}] ({e['id']}): kind {kind!r} is not one of {PROMPT_KINDS}")
        if e["id"] in seen:
            raise ValueError(f"{where}: duplicate id {e['id']!r}")
        seen.add(e["id"])
        answers = [str(a) for a in (e.get("answers") or [])]
        prompts.append(EvalPrompt(id=str(e["id"]), text=str(e["text"]).rstrip(), kind=kind, answers=answers))
    return prompts


def load_eval_prompts(path: str | Path | None = None) -> list[EvalPrompt]:
    """Our evaluation set (`prompts:` of the YAML at `path`; default: the set shipped in the package)."""
    return _parse_entries(_read_yaml(path).get("prompts"), "prompts")


def load_paper_probes(path: str | Path | None = None) -> list[EvalPrompt]:
    """The paper's two hand-written probe examples plus our context-tracking one (`paper_probes:`)."""
    return _parse_entries(_read_yaml(path).get("paper_probes"), "paper_probes")


# --- the paper's evaluation file -----------------------------------------------------------------


def _clean_paper_entry(text: str) -> str:
    """Normalise one beginning from the hub file. Line endings become "\\n", spaces at the end of each
    line and blank lines at both ends go, paragraph breaks inside stay. The end is only right-stripped:
    a beginning that stops mid-word ("...to the pa") is kept exactly, with no space added, because the
    model is meant to finish that word."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    return "\n".join(lines).strip("\n").lstrip()


def load_paper_eval_yaml(path: str | Path) -> list[EvalPrompt]:
    """Read the hub's `Evaluation prompts.yaml` (a YAML list of block strings, each a story beginning).
    Empty entries are skipped; the rest get ids "paper-01", "paper-02", ... in file order."""
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a YAML list of story beginnings, got {type(data).__name__}")
    prompts = []
    for i, entry in enumerate(data):
        if entry is None:
            continue
        if not isinstance(entry, (str, int, float)):
            raise ValueError(f"{path}[{i}]: expected a string, got {type(entry).__name__}")
        text = _clean_paper_entry(str(entry))
        if text:
            prompts.append(EvalPrompt(id=f"paper-{len(prompts) + 1:02d}", text=text, kind="story"))
    return prompts


def fetch_paper_eval_yaml(cache_dir: str | Path | None = None) -> Path:
    """Download the paper's `Evaluation prompts.yaml` from the hub (needs `huggingface_hub` and a
    network, or a warm hub cache) and return its local path."""
    tried = (
        f"huggingface_hub.hf_hub_download(repo_id={PAPER_REPO_ID!r}, filename={PAPER_EVAL_FILENAME!r}, "
        f"repo_type='dataset', cache_dir={str(cache_dir) if cache_dir else None!r})"
    )
    instead = (
        "To use a copy you already have, pass its path to "
        "tinystories_lib.evals.eval_prompts.load_paper_eval_yaml(path) instead."
    )
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise RuntimeError(f"huggingface_hub is not installed, so could not run {tried}. {instead}") from e
    try:
        local = hf_hub_download(
            repo_id=PAPER_REPO_ID,
            filename=PAPER_EVAL_FILENAME,
            repo_type="dataset",
            cache_dir=str(cache_dir) if cache_dir else None,
        )
    except Exception as e:  # offline, DNS, HTTP errors, missing cache: all mean "not available here"
        raise RuntimeError(
            f"Could not download the paper's evaluation prompts: {tried} failed with "
            f"{type(e).__name__}: {e}. Are you offline? {instead}"
        ) from e
    return Path(local)
