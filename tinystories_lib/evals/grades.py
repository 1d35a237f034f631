"""The grading interface: a completion to grade, a grade, and the graders that produce them.

Two kinds of grader plug in here: the paper's LLM judge (`tinystories_lib.evals.judge`, any OpenAI-compatible
endpoint) and the offline grader (`tinystories_lib.evals.offline`), which scores the same four dimensions
without an LLM and says plainly that it is not GPT-4.
Both return `Grade` records, so tables and figures treat them alike.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

# The paper's four GPT-Eval dimensions, each scored out of 10.
LLM_DIMENSIONS = ("grammar", "creativity", "consistency", "plot")
AGE_GROUPS = {"A": "3 or under", "B": "4-5", "C": "6-7", "D": "8-9", "E": "10-12", "F": "13-16"}


@dataclass
class Completion:
    """A model's completion of a story beginning. `model` is a label (e.g. "h64-l2"), `step` the
    training step of the checkpoint that wrote it (None for a final model)."""

    model: str
    prompt_id: str
    beginning: str
    completion: str
    step: int | None = None
    sample_index: int = 0

    @property
    def key(self) -> str:
        """Content hash of what is graded (beginning + completion): the cache key for judges."""
        return hashlib.sha256((self.beginning + "\x00***\x00" + self.completion).encode()).hexdigest()[:20]


@dataclass
class Grade:
    """One grader's verdict on one completion. `scores` maps a dimension to a number (LLM judge: out of
    10; the offline grader: the same dimensions, 0..10 on scales it states). `status` is "ok" or "failed"; a failed
    grade keeps its `reason` and is never dropped silently."""

    model: str
    prompt_id: str
    completion_key: str
    grader: str
    scores: dict[str, float] = field(default_factory=dict)
    age_group: str | None = None
    status: str = "ok"
    reason: str | None = None
    step: int | None = None
    sample_index: int = 0
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict) -> Grade:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class Grader(Protocol):
    """Anything that grades completions. `name` goes into every Grade; `is_llm` tells tables whether
    the scores are the paper's GPT-Eval dimensions or offline stand-ins."""

    name: str
    is_llm: bool

    def grade(self, completions: Sequence[Completion]) -> list[Grade]: ...
