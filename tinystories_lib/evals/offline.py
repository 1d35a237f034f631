"""The paper's four grading dimensions, measured offline: grammar, consistency, creativity, plot.

These are NOT the paper's GPT-4 grades. The paper asks GPT-4 to score a completion's grammar,
consistency, creativity and plot out of 10 (`evals.grades.LLM_DIMENSIONS`); `OfflineGrader` scores the
same four dimensions, under the same names so tables line up, with measures that need no LLM. Each is a
narrow, stated proxy for what a reader would judge, calibrated to 0..10 on held-out stories:

- grammar: how likely the completion is, after its beginning, under a published TinyStories model given
  as `reference` (e.g. llama2.c's stories260K: minus its bits per byte), else under a word trigram model
  with Kneser-Ney smoothing trained on the training stories (`evals.word_lm`: mean log-probability per
  word). Anchors: 10 = the mean over real continuations (second halves of calibration stories after
  their first halves), 0 = the same continuations with the words of each sentence shuffled. Prefer the
  reference: the models being graded learn the trigram statistics of their training stories first, so
  the trigram rates their early, broken text near real text, while a neural model with the whole
  beginning in view does not. (The reference's own completions are then graded by itself.)
- consistency: does the completion stay with its beginning's story: the names it keeps and the pronoun
  gender it agrees with (`evals.entities.entity_report`, where there is something to check), and the
  cosine of TF-IDF vectors of the content words of beginning and completion. Anchors of the cosine:
  10 = true (first half, second half) pairs of calibration stories, 0 = mismatched pairs (the first half
  of one story, the second half of another).
- creativity: novel, specific content in fluent, varied text: 10 x novelty x (grammar / 10) x variety x
  specificity, with novelty = 1 - the best Rouge-2 precision of the completion against any training
  story (`evals.ngram_index.NgramIndex.search`), variety = 1 - the share of its 4-grams that repeat an
  earlier one, and specificity = the share of its content words outside the corpus's commonest ones
  ("day", "play", "happy", ...: `TopicVectors.generic`), relative to real continuations. Text copied
  from the training set scores ~0, and so do word salad and a loop, novel as they are, and a story told
  in the commonest words scores low.
- plot: does the completion move the story on and close it: the mean of not looping (no repeated
  sentences, few repeated 4-grams: `evals.text_metrics.repetition_rate`), turns and sequence markers
  ("but", "then", "suddenly", "one day", ...) and a resolution (it ends with closing punctuation, and its
  last sentences carry a closing cue: "happy", "learned", "from that day", "the end", ...).

Every raw measurement is kept in `Grade.extra["raw"]` (the old offline measures among them: novelty,
entity consistency, 4-gram non-repetition, and distinct-2 for reference), with what it was computed from
in `extra["details"]` and the calibration anchors in `extra["anchors"]`. Words are
`stories.words.split_words` tokens: lowercased, each punctuation mark a token of its own.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections import Counter
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
from tinystories_lib.evals.word_lm import WordTrigramLM
from tinystories_lib.stories.words import (
    SENTENCE_END,
    content_words,
    sentences,
    split_words,
    uses_phrase,
    words,
)

log = logging.getLogger(__name__)

# --- story halves and broken text, for calibration (and the tests) -------------------------------


def split_story(text: str, min_words: int = 10) -> tuple[str, str] | None:
    """(beginning, ending) of a story cut at the sentence end nearest its middle (by characters), each
    with at least `min_words` words; the ending keeps its leading space. None when there is no such cut."""
    cuts = [m.end() for m in SENTENCE_END.finditer(text)]
    cuts = [c for c in cuts if len(words(text[:c])) >= min_words and len(words(text[c:])) >= min_words]
    if not cuts:
        return None
    cut = min(cuts, key=lambda c: abs(c - len(text) / 2))
    return text[:cut], text[cut:]


_MARKS = re.compile(r"[^\w\s]")


def shuffle_within_sentences(text: str, rng: random.Random) -> str:
    """The text with the tokens of each sentence shuffled, its closing marks (". ! ? and quotes) kept at
    its end: the same words, no grammar. Sentences are `stories.words.sentences`."""
    out = []
    for sent in sentences(text):
        toks = split_words(sent, lower=False)
        n = len(toks)
        while n and _MARKS.fullmatch(toks[n - 1]):
            n -= 1
        body = toks[:n]
        rng.shuffle(body)
        out.append(" ".join(body + toks[n:]))
    return " " + " ".join(out)


# --- topical cohesion ----------------------------------------------------------------------------

GENERIC_WORDS = 100  # the commonest content words of a corpus, which say little that is a story's own


class TopicVectors:
    """TF-IDF vectors of content words (`stories.words.content_words`), the IDF from a corpus: idf(w) = ln((1 + N) / (1 + df(w))) + 1,
    tf = 1 + ln(count); an unseen word gets the IDF of a word in no story. `generic`: the corpus's
    `GENERIC_WORDS` content words in the most stories."""

    def __init__(self, texts: Sequence[str]):
        df: Counter[str] = Counter()
        for t in texts:
            df.update(set(content_words(t)))
        self.n = len(texts)
        self.idf = {w: math.log((1 + self.n) / (1 + c)) + 1 for w, c in df.items()}
        self.unseen_idf = math.log(1 + self.n) + 1
        # The content words found in the most stories (ties by word, so the set does not depend on order).
        self.generic = frozenset(sorted(df, key=lambda w: (-df[w], w))[:GENERIC_WORDS])

    def specific_share(self, text: str) -> float | None:
        """The share of the text's content words that are not `generic`; None with no content word."""
        ws = content_words(text)
        return sum(w not in self.generic for w in ws) / len(ws) if ws else None

    def vector(self, text: str) -> dict[str, float]:
        return {w: (1 + math.log(c)) * self.idf.get(w, self.unseen_idf) for w, c in Counter(content_words(text)).items()}

    def cosine(self, a: str, b: str) -> float | None:
        """Cosine of the two texts' vectors; None when either has no content words."""
        va, vb = self.vector(a), self.vector(b)
        if not va or not vb:
            return None
        dot = sum(x * vb.get(w, 0.0) for w, x in va.items())
        return dot / math.sqrt(sum(x * x for x in va.values()) * sum(x * x for x in vb.values()))


# --- plot cues -----------------------------------------------------------------------------------

TURN_MARKERS = ("but", "then", "suddenly", "so", "when", "after", "until", "finally", "because", "later",
                "soon", "next", "however", "instead", "meanwhile", "while", "one day", "the next day",
                "all of a sudden", "at last", "in the end")
CLOSING_CUES = ("happy", "happily", "glad", "proud", "smiled", "smile", "learned", "lesson", "forever",
                "always", "never again", "together", "thanked", "the end", "from that day", "from then on",
                "ever after", "best friends", "safe", "hugged", "loved")


def _sentence_key(sent: str) -> tuple[str, ...]:
    return tuple(words(sent))


# --- the grader ----------------------------------------------------------------------------------


class OfflineGrader:
    """The paper's four dimensions (grammar, consistency, creativity, plot) measured without an LLM.
    These are NOT the paper's GPT-4 grades: each is a stated proxy, scored 0..10, so its tables sit beside
    the judge's under the same names. Use it to run the pipeline with no judge, or beside the judge's.

    Built from the training stories (`train_texts`: the grammar model on at most `max_lm_stories` of them,
    the IDF on the same ones, and the nearest-story index, `train_index`, on all of them unless given) and
    held-out calibration stories (`calibration_texts`, never training ones; those also in `train_texts`
    are left out), each cut at a sentence end near its middle (`split_story`), which fix the anchors
    (`self.anchors`) of the 0..10 scales:

    - grammar: x = minus the bits per byte of the completion after its beginning under `reference` (a
      published model), else the mean per-word log-probability under a Kneser-Ney word trigram model
      (`evals.word_lm.WordTrigramLM`). Scale: 10 x clip((x - lo) / (hi - lo), 0, 1),
      with hi = the mean x of the calibration stories' real second halves, lo = the mean x of the same
      halves with each sentence's words shuffled (`shuffle_within_sentences`). So 10 reads "as fluent as
      a real TinyStories continuation, on average", 0 "no better than shuffled words"; real continuations
      spread around the top of the scale (half of them are below their own mean).
    - consistency: the mean of the parts that apply, each 0..1, times 10:
      entities = `entity_report(...).score` (names kept rather than brought in, pronoun gender; applies
      when there are names or gendered pronouns to check) and topic = clip((c - lo) / (hi - lo), 0, 1)
      where c is the cosine of the TF-IDF content-word vectors (`TopicVectors`) of beginning and
      completion, hi the mean c of true (first half, second half) pairs of the calibration stories, lo
      that of mismatched pairs (one story's first half, the next one's second half). Left out of the
      scores (reason in `extra["not_scored"]`) only when neither part applies.
    - creativity: 10 x novelty x (grammar / 10) x variety x specificity, novelty = 1 - the best Rouge-2
      precision of the completion against a training story (`NgramIndex.search`), variety = 1 -
      `repetition_rate` (the share of repeated 4-grams; ~0.99 for real endings, ~0.2 for a sentence said
      over and over, which is novel against the training set but not creative), specificity =
      clip(s / hi, 0, 1) with s the share of the completion's content words that are not among the
      `GENERIC_WORDS` content words found in the most training stories (`TopicVectors.generic`) and hi
      the mean s of the calibration stories' real second halves (0 with no content word). Small models
      learn the commonest words first ("he saw a big tree. the bird was happy"), which a reader does not
      call creative however fluent. Anchors: 0 = copied from a training story, not fluent at all, one
      loop, or only the commonest words; 10 = fluent, never repeating itself, sharing no bigram with any
      training story and as specific in its words as a real continuation. Real held-out endings of
      TinyStories, a formulaic corpus, land near 6.
    - plot: 10 x the mean of three parts, each 0..1: non_repetition = min(1 - the share of repeated
      4-grams, 1 - the share of sentences that repeat an earlier sentence of the story); progression =
      min(1, distinct `TURN_MARKERS` used / 2); resolution = 1/2 for ending with . ! or ? (closing quote
      aside) + 1/2 for a `CLOSING_CUES` word or phrase in the last two sentences. Anchors: 10 = a
      completion that never loops, turns twice and closes; 0 = a loop with no turn and no ending.

    A completion with fewer than two tokens scores 0 on every dimension (`extra["details"]["note"]`). A
    measurement that raises gives a failed Grade with its reason, never a dropped one. Every raw value is
    kept in `Grade.extra["raw"]`, among them the old offline measures (novelty, entity_consistency,
    non_repetition_4gram; distinct_2 and, where the beginning ends mid-sentence, completes_sentence for
    reference only), what they came from in `extra["details"]` and the anchors in `extra["anchors"]`.
    """

    name = "offline grader (not GPT-4)"
    is_llm = False
    DIMENSIONS = ("grammar", "consistency", "creativity", "plot")  # `LLM_DIMENSIONS`, the judge's names
    MIN_CALIBRATION = 5  # fewer held-out stories cannot fix an anchor; under 50 they are rough (warned)

    def __init__(
        self,
        train_texts: Sequence[str],
        calibration_texts: Sequence[str],
        train_index: NgramIndex | None = None,
        max_lm_stories: int = 20_000,
        max_calibration: int = 1_000,
        max_sentence_words: int = 30,
        seed: int = 0,
        reference=None,
    ):
        train_texts = train_texts if isinstance(train_texts, Sequence) else list(train_texts)
        self.train_index = train_index if train_index is not None else NgramIndex(train_texts)
        self.max_sentence_words = max_sentence_words
        lm_texts = list(train_texts[:max_lm_stories])
        self.lm = WordTrigramLM(lm_texts)
        self.reference = reference  # a published model (`stages.references.Reference`) for grammar, or None
        self.topics = TopicVectors(lm_texts)
        self.anchors = self._calibrate(calibration_texts, set(lm_texts), max_calibration, seed)

    # calibration

    def _calibrate(self, texts: Sequence[str], train: set[str], limit: int, seed: int) -> dict:
        held_out = [t for t in texts if t not in train]
        if len(held_out) < len(texts):
            log.warning("offline grader: %d calibration stories are training stories; left out",
                        len(texts) - len(held_out))
        pairs = [p for p in map(split_story, held_out) if p is not None][:limit]
        if len(pairs) < self.MIN_CALIBRATION:
            raise ValueError(f"the offline grader needs at least {self.MIN_CALIBRATION} held-out calibration "
                             f"stories of two sentences or more; got {len(pairs)}")
        if len(pairs) < 50:
            log.warning("offline grader: only %d calibration stories; the 0..10 anchors are rough", len(pairs))
        rng = random.Random(seed)
        real = self._fluency(pairs)
        shuffled = self._fluency([(b, shuffle_within_sentences(e, rng)) for b, e in pairs])
        specific = [self.topics.specific_share(e) for _, e in pairs]
        true_c = [self.topics.cosine(b, e) for b, e in pairs]
        mismatched = [self.topics.cosine(b, pairs[(i + 1) % len(pairs)][1]) for i, (b, _) in enumerate(pairs)]

        def mean(xs):
            xs = [x for x in xs if x is not None]
            return sum(xs) / len(xs)

        anchors = {"grammar_logprob": {"hi": mean(real), "lo": mean(shuffled), "model": self.grammar_model},
                   "topic_cosine": {"hi": mean(true_c), "lo": mean(mismatched)},
                   "specific_share": {"hi": mean(specific), "lo": 0.0}}
        for name, a in anchors.items():
            if not a["hi"] > a["lo"]:
                raise ValueError(f"offline grader calibration failed: {name} of real stories ({a['hi']:.3f}) is "
                                 f"not above that of broken ones ({a['lo']:.3f})")
        return {**anchors, "n_calibration": len(pairs)}

    @property
    def grammar_model(self) -> str:
        return (f"{self.reference.label} (negative bits per byte)" if self.reference is not None
                else "word trigram of the training stories (mean log-probability per word)")

    def _fluency(self, pairs: Sequence[tuple[str, str]]) -> list[float | None]:
        """How likely each (beginning, continuation)'s continuation is: under the reference model, minus its
        bits per byte given the beginning; else the word trigram's mean log-probability per word."""
        if self.reference is None:
            return [self.lm.mean_logprob(b, e) for b, e in pairs]
        from tinystories_lib.evals.probes import perplexity_of_completions

        cdc = self.reference.codec
        ppl = perplexity_of_completions(self.reference.model, cdc, [Completion("", "", b, e) for b, e in pairs])
        out = []
        for (_, e), p in zip(pairs, ppl):
            n_bytes = len(e.encode("utf-8"))
            ok = n_bytes and math.isfinite(p)
            out.append(-math.log2(p) * len(cdc.encode(e)) / n_bytes if ok else None)
        return out

    @staticmethod
    def _scaled(x: float, anchor: dict) -> float:
        hi, lo = anchor["hi"], anchor["lo"]
        return min(1.0, max(0.0, (x - lo) / (hi - lo)))

    # grading

    def grade(self, completions: Sequence[Completion]) -> list[Grade]:
        fluency = self._fluency([(c.beginning, c.completion) for c in completions])  # batched through the model
        return [self._grade_one(c, x) for c, x in zip(completions, fluency)]

    def _grade_one(self, c: Completion, fluency: float | None) -> Grade:
        grade = Grade(model=c.model, prompt_id=c.prompt_id, completion_key=c.key, grader=self.name,
                      step=c.step, sample_index=c.sample_index)
        try:
            scores, raw, details, not_scored = self._measure(c, fluency)
        except Exception as e:  # a failed grade is recorded, never dropped
            grade.status, grade.reason = "failed", f"{type(e).__name__}: {e}"
            return grade
        grade.scores = scores
        grade.extra = {"raw": raw, "details": details, "not_scored": not_scored, "anchors": self.anchors,
                       "scale": "0..10 per dimension, calibrated on held-out stories (see OfflineGrader); "
                                "offline measures, not GPT-4"}
        return grade

    def _measure(self, c: Completion, fluency: float | None) -> tuple[dict, dict, dict, dict]:
        raw: dict[str, float] = {}
        details: dict = {}
        not_scored: dict[str, str] = {}
        toks = split_words(c.completion)
        if len(toks) < 2:
            details["note"] = "completion has fewer than two tokens: 0 on every dimension"
            return {d: 0.0 for d in self.DIMENSIONS}, raw, details, not_scored

        # grammar
        if fluency is None:
            raise ValueError("the grammar model found nothing to score in the completion")
        raw["grammar_logprob"] = fluency
        details["grammar_model"] = self.grammar_model
        raw["grammar"] = grammar = self._scaled(raw["grammar_logprob"], self.anchors["grammar_logprob"])

        # consistency
        report = entity_report(c.beginning, c.completion, self.train_index.common_words)
        details["entities"] = {"beginning": report.names_beginning, "kept": report.names_kept,
                               "new": report.names_new, "gender": report.gender}
        parts = {}
        if report.score is not None:
            parts["entity_consistency"] = raw["entity_consistency"] = report.score
        cosine = self.topics.cosine(c.beginning, c.completion)
        if cosine is not None:
            raw["topic_cosine"] = cosine
            parts["topic"] = raw["topic"] = self._scaled(cosine, self.anchors["topic_cosine"])
        if ends_mid_sentence(c.beginning):  # kept for reference; not part of any dimension
            raw["completes_sentence"] = float(completes_sentence(c.beginning, c.completion, self.max_sentence_words))
        details["consistency_parts"] = sorted(parts)

        # creativity
        found = self.train_index.search(c.completion, k=1)
        best = found.hits[0] if found.hits else (None, 0.0)
        raw["rouge2_precision"], raw["novelty"] = best[1], 1.0 - best[1]
        details.update(nearest_story=best[0], novelty_exact=found.exact)
        raw["non_repetition_4gram"] = 1.0 - repetition_rate(c.completion)  # variety; also part of plot
        raw["distinct_2"] = distinct_n([c.completion], 2)  # kept for reference; not part of any dimension
        share = self.topics.specific_share(c.completion)
        raw["specific_share"] = share if share is not None else 0.0
        raw["specificity"] = self._scaled(raw["specific_share"], self.anchors["specific_share"])

        # plot
        b_sents = {k for k in map(_sentence_key, sentences(c.beginning)) if k}
        c_sents = [k for k in map(_sentence_key, sentences(c.completion)) if k]
        seen, repeats = set(b_sents), 0
        for k in c_sents:
            repeats += k in seen
            seen.add(k)
        raw["repeated_sentences"] = repeats / len(c_sents) if c_sents else 0.0
        raw["non_repetition"] = min(raw["non_repetition_4gram"], 1.0 - raw["repeated_sentences"])
        ws = words(c.completion)
        markers = [p for p in TURN_MARKERS if uses_phrase(ws, p)]
        raw["progression"] = min(1.0, len(markers) / 2)
        tail = [w for s in sentences(c.completion)[-2:] for w in words(s)]
        cues = [p for p in CLOSING_CUES if uses_phrase(tail, p)]
        closed = not ends_mid_sentence(c.completion)
        raw["resolution"] = 0.5 * closed + 0.5 * bool(cues)
        details.update(turn_markers=markers, closing_cues=cues, ends_closed=closed)

        scores = {"grammar": 10.0 * grammar}
        if parts:
            scores["consistency"] = 10.0 * sum(parts.values()) / len(parts)
        else:
            not_scored["consistency"] = "no names, gendered pronouns or content words to compare"
        scores["creativity"] = 10.0 * raw["novelty"] * grammar * raw["non_repetition_4gram"] * raw["specificity"]
        scores["plot"] = 10.0 * (raw["non_repetition"] + raw["progression"] + raw["resolution"]) / 3
        return {d: scores[d] for d in self.DIMENSIONS if d in scores}, raw, details, not_scored
