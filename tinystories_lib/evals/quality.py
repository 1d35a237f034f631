"""A data-quality filter the phi-1 way: an annotator labels a sample, a cheap classifier learns the labels
and filters the rest.

phi-1 (Gunasekar et al. 2023, "Textbooks Are All You Need") had GPT-4 rate a sample of code for its
educational value, trained a random forest on embeddings of the rated files, and kept what it scored
high. Here the annotator is a `Grader` (`evals.grades`): the paper's LLM judge or the offline grader,
grading each story's second half after its first (`annotate`), and a story is labelled good when the
mean of its grades reaches a threshold. The classifier (scikit-learn, the `quality` extra) reads cheap
text features, never the grader:

    hashed word 1-2-grams of the story, and of its first and last sentences apart (openings and endings
    are where a shuffled story shows), plus a few dense measures: log length, words per sentence, mean
    word length, type-token ratio, share of sentences that end closed, and the share of rare words
    (words the whole pool holds at most twice: a typo makes one)

    QualityClassifier(kind).fit(texts, labels, pool)   .score(texts) -> P(good)   .metrics(texts, labels)
`kind` "logistic" is a logistic regression on all of them; "forest" (phi-1's) a random forest on the
dense measures beside a 64-dimensional SVD of the hashed n-grams, the embedding here.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tinystories_lib.evals.grades import Completion, Grader
from tinystories_lib.evals.offline import split_story
from tinystories_lib.stories.words import SENTENCE_END, sentences, words

# Dense measures, in this order (names for the artifact and the notebook).
DENSE = ("log_chars", "words_per_sentence", "mean_word_length", "type_token_ratio", "closed_sentences",
         "rare_words")
RARE_COUNT = 2  # a word the pool holds at most this often is rare
_HASH_FEATURES = 2**16
_EDGE_FEATURES = 2**12


def _sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise ImportError("the quality classifier needs scikit-learn: pip install -e '.[quality]' "
                          "(or pip install scikit-learn)") from None


def annotate(grader: Grader, texts: Sequence[str], ids: Sequence[str] | None = None,
             grade: Callable[[list[Completion]], list] | None = None) -> list[float | None]:
    """The annotator's score of each story, 0..10: the mean of the grades of its second half after its
    first (`offline.split_story`), as a model's completion would be graded (by `grade`, default
    `grader.grade`; the stage passes one that uses the Batch API where the profile asks). None where a
    story has no such cut or its grade failed (a label is never made up)."""
    ids = list(ids) if ids is not None else [str(i) for i in range(len(texts))]
    pairs = [split_story(t) for t in texts]
    todo = [Completion(model="quality-annotation", prompt_id=i, beginning=p[0], completion=p[1])
            for i, p in zip(ids, pairs) if p is not None]
    by_key = {}
    for c, g in zip(todo, (grade or grader.grade)(todo)):
        if g.status == "ok" and g.scores:
            by_key[c.prompt_id] = sum(g.scores.values()) / len(g.scores)
    return [by_key.get(i) for i in ids]


def _edges(text: str) -> tuple[str, str]:
    s = sentences(text)
    return (s[0], s[-1]) if s else ("", "")


def dense_features(texts: Sequence[str], counts: Counter) -> np.ndarray:
    """The dense measures (`DENSE`) of each text; `counts` are the word counts of the pool."""
    rows = []
    for t in texts:
        ws = words(t)
        sents = sentences(t)
        n = max(1, len(ws))
        rows.append([math.log1p(len(t)), len(ws) / max(1, len(sents)), sum(map(len, ws)) / n,
                     len(set(ws)) / n, sum(bool(SENTENCE_END.search(s)) for s in sents) / max(1, len(sents)),
                     sum(counts.get(w, 0) <= RARE_COUNT for w in ws) / n])
    return np.asarray(rows, dtype=np.float64).reshape(len(texts), len(DENSE))


_TOKEN = re.compile(r"(?u)\b\w+\b|[^\w\s]")


class QualityClassifier:
    """Learns an annotator's good/bad labels from cheap text features (see the module's docstring)."""

    def __init__(self, kind: str = "logistic", seed: int = 0):
        if kind not in ("logistic", "forest"):
            raise ValueError(f"classifier kind must be logistic or forest, got {kind!r}")
        _sklearn()
        from sklearn.feature_extraction.text import HashingVectorizer

        self.kind, self.seed = kind, seed
        common = dict(ngram_range=(1, 2), alternate_sign=False, norm="l2", token_pattern=None,
                      tokenizer=_TOKEN.findall, lowercase=True)
        self.body = HashingVectorizer(n_features=_HASH_FEATURES, **common)
        self.edge = HashingVectorizer(n_features=_EDGE_FEATURES, **(common | {"ngram_range": (1, 1)}))
        self.counts: Counter = Counter()
        self.model = self.scaler = self.svd = None

    def _features(self, texts: Sequence[str], fit: bool = False):
        from scipy import sparse

        first, last = zip(*map(_edges, texts)) if texts else ((), ())
        hashed = sparse.hstack([self.body.transform(texts), self.edge.transform(first),
                                self.edge.transform(last)]).tocsr()
        dense = dense_features(texts, self.counts)
        if fit:
            from sklearn.preprocessing import StandardScaler

            self.scaler = StandardScaler().fit(dense)
        dense = self.scaler.transform(dense)
        if self.kind == "logistic":
            return sparse.hstack([hashed, sparse.csr_matrix(dense)]).tocsr()
        if fit:
            from sklearn.decomposition import TruncatedSVD

            self.svd = TruncatedSVD(n_components=min(64, max(1, min(hashed.shape) - 1)),
                                    random_state=self.seed).fit(hashed)
        return np.hstack([self.svd.transform(hashed), dense])

    def fit(self, texts: Sequence[str], labels: Sequence[int], pool: Sequence[str] | None = None):
        """Learn `labels` (1 good, 0 bad) of `texts`; word counts for the rare-word share come from `pool`
        (the whole corpus to be filtered, unlabelled; default `texts`)."""
        labels = np.asarray(labels, dtype=int)
        if len(set(labels.tolist())) < 2:
            raise ValueError("the annotated sample has one label only: the classifier needs good and bad "
                             "examples (lower or raise the label threshold, or annotate more stories)")
        self.counts = Counter(w for t in (pool if pool is not None else texts) for w in words(t))
        X = self._features(texts, fit=True)
        if self.kind == "logistic":
            from sklearn.linear_model import LogisticRegression

            self.model = LogisticRegression(C=1.0, class_weight="balanced", solver="liblinear", max_iter=1000)
        else:
            from sklearn.ensemble import RandomForestClassifier

            self.model = RandomForestClassifier(n_estimators=200, min_samples_leaf=2, class_weight="balanced",
                                                random_state=self.seed, n_jobs=1)
        self.model.fit(X, labels)
        return self

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """P(good) of each text."""
        if self.model is None:
            raise RuntimeError("fit the classifier first")
        if not texts:
            return np.zeros(0)
        return self.model.predict_proba(self._features(texts))[:, list(self.model.classes_).index(1)]

    def metrics(self, texts: Sequence[str], labels: Sequence[int], threshold: float = 0.5) -> dict:
        return classification_metrics(labels, self.score(texts) >= threshold)


@dataclass
class Split:
    train: list[int]
    test: list[int]


def train_test_split(n: int, test_fraction: float, seed: int, labels: Sequence[int] | None = None) -> Split:
    """Indices of a held-out test share, drawn per label (stratified) when `labels` are given, so both
    parts hold good and bad examples; at least one of each label on each side where there are two."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(np.asarray(labels) == v) for v in sorted(set(labels))] if labels is not None \
        else [np.arange(n)]
    train, test = [], []
    for g in groups:
        g = rng.permutation(g)
        k = int(round(test_fraction * len(g)))
        if len(g) >= 2:
            k = min(max(k, 1), len(g) - 1)
        test += g[:k].tolist()
        train += g[k:].tolist()
    return Split(sorted(train), sorted(test))


def classification_metrics(labels: Sequence[int], kept: Sequence[bool]) -> dict:
    """Of "good" (label 1) as the class a filter keeps: precision (share of kept stories the annotator
    calls good), recall (share of good stories kept), accuracy, F1, and the counts behind them."""
    y, k = np.asarray(labels, dtype=bool), np.asarray(kept, dtype=bool)
    tp, fp = int((y & k).sum()), int((~y & k).sum())
    fn, tn = int((y & ~k).sum()), int((~y & ~k).sum())
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else None
    return {"precision": precision, "recall": recall, "accuracy": (tp + tn) / max(1, len(y)), "f1": f1,
            "n": len(y), "good": int(y.sum()), "kept": int(k.sum()), "tp": tp, "fp": fp, "fn": fn, "tn": tn}
