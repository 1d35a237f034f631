"""Offline measures of generated stories, as grades.

These are NOT the paper's GPT-4 grades. The paper asks GPT-4 to score grammar, creativity, consistency and
plot; nothing offline can do that. What this module measures instead is narrow and stated exactly:
- novelty: how little of a completion is copied from the training set (1 - best Rouge-2 precision
  against any training story, found with `NgramIndex`);
- entity_consistency: whether a completion keeps the names (and pronoun gender) the beginning set up;
- completes_sentence: whether a completion closes the sentence the beginning left open;
- non_repetition: 1 - the share of repeated 4-grams (catches degenerate loops);
- distinct_2: share of distinct word bigrams (lexical variety).
`OfflineGrader` turns these into `Grade` records scored 0..10 so they can sit beside the judge's tables
(`evals.grade_tables`). The measures themselves are `evals.text_metrics`, `evals.entities` and
`evals.ngram_index`; text is split into word tokens by `stories.words.split_words`: lowercased, with each
punctuation mark a token of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from tinystories_lib.evals.entities import entity_report
from tinystories_lib.evals.grades import Completion, Grade
from tinystories_lib.evals.ngram_index import NgramIndex
from tinystories_lib.evals.text_metrics import (
    completes_sentence,
    distinct_n,
    ends_mid_sentence,
    repetition_rate,
)

# --- the offline grader --------------------------------------------------------------------------


class OfflineGrader:
    """Offline stand-ins for grading, NOT the paper's GPT-4 grades: they measure copying, name and pronoun
    consistency, sentence closure, looping and lexical variety, never grammar, creativity or plot as a
    reader would judge them. Use them to run the pipeline with no judge, or beside the judge's tables.

    Each score is 10 x a raw value in 0..1, so tables can sit beside the judge's out-of-10 ones; the raw
    values and what each was computed from are kept in `Grade.extra`. A dimension that does not apply to
    a completion is left out of its scores (the reason is in `extra["not_scored"]`), so means count only
    completions that were measured:
    - novelty: 1 - best Rouge-2 precision against the training set (needs `train_index`);
    - entity_consistency: see `entity_report` (left out when there is nothing to check);
    - completes_sentence: 10 or 0 (left out when the beginning ends at a sentence boundary);
    - non_repetition: 1 - `repetition_rate`;
    - distinct_2: `distinct_n` of the completion alone, n=2.
    """

    name = "offline-metrics (not GPT-4)"
    is_llm = False
    DIMENSIONS = ("novelty", "entity_consistency", "completes_sentence", "non_repetition", "distinct_2")

    def __init__(self, train_index: NgramIndex | None = None, max_sentence_words: int = 30):
        self.train_index = train_index
        self.max_sentence_words = max_sentence_words

    def grade(self, completions: Sequence[Completion]) -> list[Grade]:
        return [self._grade_one(c) for c in completions]

    def _grade_one(self, c: Completion) -> Grade:
        grade = Grade(model=c.model, prompt_id=c.prompt_id, completion_key=c.key, grader=self.name,
                      step=c.step, sample_index=c.sample_index)
        try:
            raw, details, not_scored = self._measure(c)
        except Exception as e:  # a failed grade is recorded, never dropped
            grade.status, grade.reason = "failed", f"{type(e).__name__}: {e}"
            return grade
        grade.scores = {d: 10.0 * v for d, v in raw.items()}
        grade.extra = {"raw": raw, "details": details, "not_scored": not_scored,
                       "scale": "score = 10 x raw value in 0..1; offline metrics, not GPT-4"}
        return grade

    def _measure(self, c: Completion) -> tuple[dict, dict, dict]:
        raw: dict[str, float] = {}
        details: dict = {}
        not_scored: dict[str, str] = {}
        if self.train_index is None:
            not_scored["novelty"] = "no training index given"
        else:
            found = self.train_index.search(c.completion, k=1)
            if found.n_bigrams == 0:
                not_scored["novelty"] = "completion has no bigrams"
            else:
                best = found.hits[0] if found.hits else (None, 0.0)
                raw["novelty"] = 1.0 - best[1]
                details.update(nearest_story=best[0], rouge2_precision=best[1], novelty_exact=found.exact)

        known = self.train_index.common_words if self.train_index is not None else None
        report = entity_report(c.beginning, c.completion, known)
        details["entities"] = {"beginning": report.names_beginning, "kept": report.names_kept,
                               "new": report.names_new, "gender": report.gender}
        if report.score is None:
            not_scored["entity_consistency"] = "no names or gendered pronouns to check"
        else:
            raw["entity_consistency"] = report.score

        if ends_mid_sentence(c.beginning):
            raw["completes_sentence"] = float(completes_sentence(c.beginning, c.completion,
                                                                 self.max_sentence_words))
        else:
            not_scored["completes_sentence"] = "beginning ends at a sentence boundary"

        raw["non_repetition"] = 1.0 - repetition_rate(c.completion)
        raw["distinct_2"] = distinct_n([c.completion], 2)
        return raw, details, not_scored
