"""TinyStories-Instruct records: format a Story as one, and parse them back.

The published files (`roneneldan/TinyStoriesInstruct`, `TinyStories-Instruct-*.txt`) hold records like

    Features: Dialogue, BadEnding
    Words: ride, work, upset
    Summary: Lily steals a new bike ...
    Story: <- note the trailing space in the published files

    Lily liked to ride her bike. ...
    <|endoftext|>

Each record has a random subset of the instruction fields (Summary, Features, Words, Random sentence) in
random order, then `Story:` and the story on the following lines, ended by a `<|endoftext|>` line.
Words are written verb, noun, adjective: the order the generation prompt names them in.

Plain stories (a TinyStories .txt) carry no fields: `derived_words` draws the Words of such a story from
the words it uses itself, and `choose_pair` moves the held-out pair of the out-of-distribution test onto
the fields a corpus has (a summary cannot be derived, so plain corpora have only features and words).
"""

from __future__ import annotations

import functools
import itertools
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from tinystories_lib.stories.prompts import vocab_index
from tinystories_lib.stories.records import EOT, Story
from tinystories_lib.stories.words import SENTENCE_END, base_word, capitalised, word_forms, words

# Project feature key -> spelling used in the published data ("Features: Dialogue, BadEnding").
# "Twist" is how the published records spell the paper's "plot twist".
FEATURE_NAMES: dict[str, str] = {
    "dialogue": "Dialogue",
    "bad_ending": "BadEnding",
    "moral_value": "MoralValue",
    "plot_twist": "Twist",
    "foreshadowing": "Foreshadowing",
    "conflict": "Conflict",
}
FEATURE_KEYS: dict[str, str] = {name: key for key, name in FEATURE_NAMES.items()}

# The word slots in the order the prompt (and therefore the `Words:` line) lists them.
WORD_ROLES = ("verb", "noun", "adjective")

# Instruction fields in a record, as (field label, key in a parsed record).
INSTRUCTION_FIELDS = (
    ("Summary", "summary"),
    ("Features", "features"),
    ("Words", "words"),
    ("Random sentence", "random_sentence"),
)
_LABEL_TO_KEY = {label.lower(): key for label, key in INSTRUCTION_FIELDS}
_HEADER = re.compile(r"^(summary|features|words|random sentence|story):[ \t]?(.*)$", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------------------
# Splitting a stream into documents (stories.loading splits plain TinyStories files with it too)
# ---------------------------------------------------------------------------------------------------------


def iter_documents(texts: Iterable[str], *, line_based: bool = True) -> Iterator[str]:
    """Yield the documents in `texts`, separated by `<|endoftext|>`, stripped, empties skipped.

    With `line_based` each item is one line of a file (the hub's .txt files, or the `datasets` text
    builder's rows), so lines are joined until a separator. Otherwise each item is a whole document
    (a parquet row) and may itself contain separators. Items are consumed lazily, so a 2 GB file streams.
    """
    buffer: list[str] = []
    for text in texts:
        *finished, rest = text.split(EOT)
        for part in finished:
            buffer.append(part)
            yield from _flush(buffer)
        buffer.append(rest)
        if not line_based:
            yield from _flush(buffer)
    yield from _flush(buffer)


def _flush(buffer: list[str]) -> Iterator[str]:
    doc = "\n".join(line.rstrip("\r\n") for line in buffer).strip()
    buffer.clear()
    if doc:
        yield doc


# ---------------------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------------------


def feature_names(keys: Iterable[str]) -> list[str]:
    """Project feature keys -> published spellings; an unknown key is CamelCased so it stays readable."""
    return [FEATURE_NAMES.get(k, "".join(part.capitalize() for part in k.split("_"))) for k in keys]


def feature_keys(names: Iterable[str]) -> list[str]:
    """Published feature spellings -> project keys; an unknown name is snake_cased."""
    return [FEATURE_KEYS.get(n, re.sub(r"(?<!^)(?=[A-Z])", "_", n.replace(" ", "")).lower()) for n in names]


def words_in_order(words: dict[str, str]) -> list[str]:
    """The words of a Story, verb/noun/adjective first (the published order), then any other keys."""
    ordered = [words[r] for r in WORD_ROLES if r in words]
    return ordered + [w for k, w in words.items() if k not in WORD_ROLES]


def words_dict(words: list[str]) -> dict[str, str]:
    """A `Words:` list -> Story.words: three words are verb, noun, adjective; otherwise keyed by position."""
    if len(words) == len(WORD_ROLES):
        return dict(zip(WORD_ROLES, words))
    return {str(i): w for i, w in enumerate(words)}


def format_record(
    story: Story,
    rng: random.Random,
    random_sentence: str | None = None,
    *,
    all_fields: bool = False,
) -> str:
    """Render `story` as a TinyStories-Instruct record, ending with the `<|endoftext|>` line.

    The fields the story has (summary, features, words, plus `random_sentence` when given) are a
    candidate pool; like the published data, a random non-empty subset of it is written in random
    order (`all_fields=True` keeps them all, still shuffled). `"".join(records)` is a valid file.
    """
    fields = _instruction_lines(story, random_sentence)
    if fields and not all_fields:
        fields = rng.sample(fields, rng.randint(1, len(fields)))
    else:
        rng.shuffle(fields)
    # The published files write "Story: " with a trailing space, then a blank line, then the story.
    return "\n".join([*fields, "Story: ", "", story.text.strip(), EOT]) + "\n"


def _instruction_lines(story: Story, random_sentence: str | None) -> list[str]:
    lines = []
    if story.summary:
        lines.append(f"Summary: {_one_line(story.summary)}")
    if story.features:
        lines.append(f"Features: {', '.join(feature_names(story.features))}")
    if story.words:
        lines.append(f"Words: {', '.join(words_in_order(story.words))}")
    if random_sentence:
        lines.append(f"Random sentence: {_one_line(random_sentence)}")
    return lines


def pick_sentence(text: str, rng: random.Random) -> str | None:
    """One sentence of the story for the `Random sentence:` field, as in the published records: a whole
    sentence of at least three words (closing quotes kept), drawn with `rng`; None if there is none."""
    flat, start, sentences = " ".join(text.split()), 0, []
    for end in (m.end() for m in SENTENCE_END.finditer(flat)):
        part, start = flat[start:end].strip(), end
        # A quote ending in ! or ? is often followed by its speech tag ("Hi!" said Tom.): keep them together.
        if sentences and sentences[-1][-1] in "\"'”’" and part[0] not in "\"'“‘":
            sentences[-1] += " " + part
        else:
            sentences.append(part)
    sentences = [x for x in sentences if len(x.split()) >= 3]
    return rng.choice(sentences) if sentences else None


def instruct_records(stories: Iterable[Story], seed: int = 0) -> Iterator[str]:
    """Stories (with summaries, words and features where they have them) as TinyStories-Instruct records:
    a random non-empty subset of Summary / Features / Words / Random sentence (a sentence drawn from the
    story) in random order, then the story and `<|endoftext|>`. Reproducible per story id and seed."""
    for story in stories:
        rng = random.Random(f"{seed}:{story.id}")
        yield format_record(story, rng, random_sentence=pick_sentence(story.text, rng))


def write_instruct_file(stories: Iterable[Story], path: str | Path, seed: int = 0) -> int:
    """Write `instruct_records` to a text file in the published layout (what `loading.load_corpus` and
    `parse_records` read back); returns the number of records."""
    n = 0
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for record in instruct_records(stories, seed):
            f.write(record)
            n += 1
    tmp.replace(path)  # whole or absent
    return n


def _one_line(text: str) -> str:
    # A field is a single line in the format; a newline would end it early.
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------------


def parse_record(text: str) -> dict:
    """Parse one record into {"summary", "features", "words", "random_sentence", "story"}.

    Absent fields are None; "features" and "words" are lists as written (published feature spellings:
    see `feature_keys`). Fields may come in any order and subset; a field line that wraps continues onto
    the next lines until the next header. Everything after `Story:` is the story, blank lines included.
    A trailing `<|endoftext|>` is ignored.
    """
    record: dict = {"summary": None, "features": None, "words": None, "random_sentence": None, "story": None}
    raw: dict[str, list[str]] = {}
    current: list[str] | None = None
    lines = text.replace(EOT, "").splitlines()
    for i, line in enumerate(lines):
        match = _HEADER.match(line)
        if match and match.group(1).lower() == "story":
            story_lines = [match.group(2), *lines[i + 1 :]]
            record["story"] = "\n".join(story_lines).strip() or None
            break
        if match:
            current = raw.setdefault(_LABEL_TO_KEY[match.group(1).lower()], [])
            current.append(match.group(2))
        elif current is not None and line.strip():
            current.append(line)
    for key, parts in raw.items():
        value = " ".join(p.strip() for p in parts).strip()
        if key in ("features", "words"):
            record[key] = [item.strip() for item in value.split(",") if item.strip()]
        else:
            record[key] = value or None
    return record


def looks_like_record(document: str) -> bool:
    """True if a document is an Instruct record: it opens with a field header and has a `Story:` section."""
    lines = document.lstrip().splitlines()
    return bool(lines) and _HEADER.match(lines[0]) is not None and parse_record(document)["story"] is not None


def parse_records(text_or_lines: str | Iterable[str]) -> list[dict]:
    """Parse every record in a whole file's text or an iterable of its lines (a file object, hub rows)."""
    return list(iter_records(text_or_lines))


def iter_records(text_or_lines: str | Iterable[str]) -> Iterator[dict]:
    """Lazy `parse_records`, for the 2 GB published files."""
    lines = text_or_lines.splitlines() if isinstance(text_or_lines, str) else text_or_lines
    for doc in iter_documents(lines, line_based=True):
        yield parse_record(doc)


def record_to_story(record: dict, id: str, source: str) -> Story:
    """A parsed record as a Story: features mapped to project keys, words to verb/noun/adjective.

    The random sentence has no Story field and is dropped (it is a sentence of the story anyway).
    """
    if not record.get("story"):
        raise ValueError(f"instruct record {id} has no 'Story:' section")
    return Story(
        id=id,
        text=record["story"],
        source=source,
        words=words_dict(record["words"]) if record.get("words") else None,
        features=feature_keys(record.get("features") or []),
        summary=record.get("summary"),
    )



FIELDS = ("summary", "features", "words")  # the instruction fields a story can supply, in display order
# Training records may also show "Random sentence:" (a sentence of the story), as the published records do;
# instructions asked of the model use FIELDS only.
TRAIN_FIELDS = (*FIELDS, "sentence")
# Whole tokens for the field labels: a small vocabulary would otherwise spell them in pieces, and a prompt
# ending at the single token "Story:" is an exact prefix of how the training records were tokenized.
HEADER_TOKENS = [f"{label}:" for label, _ in INSTRUCTION_FIELDS] + ["Story:"]
STORY_HEADER = "Story:"
# Bump when the record format or field choice changes: the tokens are rebuilt. 4: fields a story lacks
# are derived from its text (words, features), and the held-out pair falls back to available fields.
FORMAT_VERSION = 4


def combo_name(combo: Sequence[str]) -> str:
    return "+".join(f for f in TRAIN_FIELDS if f in combo) or "none"


def story_fields(story: Story) -> tuple[str, ...]:
    """The instruction fields this story can supply."""
    have = {"summary": bool(story.summary), "features": bool(story.features), "words": bool(story.words)}
    return tuple(f for f in FIELDS if have[f])


def _subsets(fields: Sequence[str]) -> list[tuple[str, ...]]:
    return [c for k in range(1, len(fields) + 1) for c in itertools.combinations(fields, k)]


def is_held_out(combo: Sequence[str], pair: Sequence[str]) -> bool:
    return set(pair) <= set(combo)


def allowed_combos(available: Sequence[str], pair: Sequence[str]) -> list[tuple[str, ...]]:
    """Non-empty field combinations a training record may show: all but those holding the pair."""
    return [c for c in _subsets(available) if not is_held_out(c, pair)]


def ood_combos(pair: Sequence[str], available: Sequence[str] = FIELDS) -> list[tuple[str, ...]]:
    """The combinations never seen in training: every one of the `available` fields that holds the pair."""
    return [c for c in _subsets([f for f in FIELDS if f in available]) if is_held_out(c, pair)]


def choose_pair(available: Sequence[str], asked: Sequence[str]) -> tuple[tuple[str, str], str | None]:
    """The held-out pair for a corpus whose stories supply the fields `available`: `asked` when both of its
    fields are available, else a pair of available fields (keeping an available one of `asked`), with a
    line that says so. Raises ValueError when fewer than two fields are available: nothing to hold out."""
    have = [f for f in FIELDS if f in available]
    if len(have) < 2:
        raise ValueError(f"the corpus supplies {' and '.join(have) or 'no instruction field'} only, so no pair of "
                         "instruction fields can be held out: the out-of-distribution test needs two of "
                         f"{', '.join(FIELDS)} (use data.source storyteller or the hub's TinyStoriesInstruct)")
    asked = tuple(asked)
    if set(asked) <= set(have):
        return asked, None
    kept = [f for f in have if f in asked]
    added = [f for f in have if f not in kept][: 2 - len(kept)]
    pair = tuple(f for f in have if f in kept + added)
    missing = " and ".join(f for f in asked if f not in have)
    return pair, (f"instruct.held_out_pair {' + '.join(asked)}: {missing} not available in this corpus, "
                  f"holding out {' + '.join(pair)} instead")


# ---------------------------------------------------------------------------------------------------------
# Words of a plain story
# ---------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _vocab_by_form() -> dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]]:
    """word form -> (vocabulary entries (role, word) whose own forms list it, entries whose `word_forms`
    hold it): the first are the sure matches, the second the rule-made ones. A form that is an inflection of
    one entry is not the bare noun or verb of another ("saw" is see's past, not the tool; "loved" stays
    the adjective too): a cheap stand-in for a tagger."""
    own: dict[str, dict[tuple[str, str], bool]] = {}  # form -> {entry: form is an inflection, not the base}
    ruled: dict[str, list[tuple[str, str]]] = {}
    for (pos, word), entry in sorted(vocab_index().items()):
        mine = {v.lower() for _, v in entry.forms} - {word.lower()}
        own.setdefault(word.lower(), {})[(pos, word)] = False
        for form in mine:
            own.setdefault(form, {})[(pos, word)] = True
        for form in word_forms(word) - mine - {word.lower()}:
            ruled.setdefault(form, []).append((pos, word))
    out: dict[str, tuple[list, list]] = {}
    for form in own.keys() | ruled.keys():
        entries = own.get(form, {})
        if any(entries.values()):
            entries = {e: infl for e, infl in entries.items() if infl or e[0] == "adjective"}
        out[form] = (list(entries), ruled.get(form, []))
    return out


def derived_words(story: Story, seed: int) -> dict[str, str] | None:
    """A verb, a noun and an adjective of the prompt vocabulary that the story uses (`prompts.vocab_index`),
    as Story.words, drawn per story id and seed; None when it uses none. A word counts where the text has
    it in a form its vocabulary entry lists (a noun's plural, a verb's past...), else in a form of
    `stories.words.word_forms`; capitalised words are left out, so names ("Lily", "Rose") are not taken for
    nouns. Without a tagger a word spelt like two parts of speech ("fish") may be drawn for either; each
    word fills one role at most."""
    toks = {base_word(w).lower() for w in words(story.text, lower=False) if not capitalised(w)}
    by_form = _vocab_by_form()
    sure: dict[str, set[str]] = {r: set() for r in WORD_ROLES}
    loose: dict[str, set[str]] = {r: set() for r in WORD_ROLES}
    for tok in toks:
        own, ruled = by_form.get(tok, ((), ()))
        for pos, word in own:
            sure[pos].add(word)
        for pos, word in ruled:
            loose[pos].add(word)
    rng = random.Random(f"{seed}:{story.id}:words")
    chosen: dict[str, str] = {}
    for role in WORD_ROLES:
        for pool in (sure[role], loose[role]):
            pool = sorted(w for w in pool if w not in chosen.values())
            if pool:
                chosen[role] = rng.choice(pool)
                break
    return chosen or None


def restrict(story: Story, combo: Sequence[str]) -> Story:
    """The story with only the instruction fields in `combo` (so `format_record` shows exactly those)."""
    return replace(story, summary=story.summary if "summary" in combo else None,
                   features=list(story.features) if "features" in combo else [],
                   words=dict(story.words) if "words" in combo and story.words else None)


def record_fields(record: str) -> set[str]:
    """The instruction fields a formatted record shows (parsed back, so tests check the text itself)."""
    parsed = parse_record(record)
    return {f for f in FIELDS if parsed[f]} | ({"sentence"} if parsed["random_sentence"] else set())


def training_record(story: Story, seed: int, pair: Sequence[str]) -> str:
    """One Instruct record (without `<|endoftext|>`; the shard writer adds it) showing a random allowed
    combination of the story's fields in random order. The rng is per story, so records are reproducible."""
    rng = random.Random(f"{seed}:{story.id}")
    sentence = pick_sentence(story.text, rng)
    combos = allowed_combos(story_fields(story) + (("sentence",) if sentence else ()), pair)
    combo = rng.choice(combos) if combos else ()
    return _strip_eot(format_record(restrict(story, combo), rng, all_fields=True,
                                    random_sentence=sentence if "sentence" in combo else None))


def _strip_eot(record: str) -> str:
    return record.rsplit(EOT, 1)[0].rstrip("\n")
