"""Load the real TinyStories corpus, in every form it is published in, as one record type (Story).

Forms:
  * .txt   – the hub's text files (TinyStories-train.txt, TinyStoriesV2-GPT4-train.txt, the Instruct
             files): stories separated by `<|endoftext|>` lines. `load_txt` streams them; hand-made files
             whose stories are separated by blank lines load with `separator="blank_line"`.
  * .json  – `TinyStories_all_data` shards (data00.json ...): a JSON list of records
             {story, instruction: {prompt, words, features}, summary, source}. JSONL is accepted too,
             including our own `stories.records.write_jsonl` output.
  * .parquet – the hub's default config (column `text`).
  * the hub itself through `datasets` (`stories.hub.load_hub`, with its errors).

`load_corpus` picks the loader for a source; cleaning and the train/val split are `stories.cleaning`'s.
Each loader has a lazy twin (`iter_corpus`, `iter_local`, `iter_txt`, `iter_json`, `iter_parquet`) that
yields one story at a time, so a corpus of millions is never held (the corpus stage reads them so); the
`load_*` functions are their lists, for small consumers. The hub's `load_hub` is a list (stories.hub).
`datasets`, `pyarrow` and `datasketch` are optional (`pip install 'tinystories-lab[data]'`) and are
imported only by the functions that need them.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from tinystories_lib.stories import instruct_format
from tinystories_lib.stories.documents import require_extra, story_id, take
from tinystories_lib.stories.hub import DEFAULT_HUB_NAME, load_hub
from tinystories_lib.stories.records import EOT, Story

LOCAL_FORMS = (".txt", ".json", ".jsonl", ".parquet")
_FORMS_HELP = (
    "accepted: a .txt file with stories separated by '<|endoftext|>' lines, a TinyStories_all_data "
    ".json shard or .jsonl file, a .parquet file with a 'text' column, or a directory of those"
)
TXT_SEPARATORS = ("endoftext", "blank_line")  # how a .txt file separates stories (data.txt_separator)
_ONE_STORY_MAX_CHARS = 2000  # longer than this with no separator, a .txt file is not one story
_SNIFF_CHARS = 1 << 20  # how much of a .txt file is searched for a separator before loading it
# A document longer than this is no story (real ones are a few thousand characters): it is skipped while
# the file is read, never held whole; a 50 MB line cost 1 GB of memory on its way to cleaning's max_chars.
_DOC_MAX_CHARS = 1 << 20


# ---------------------------------------------------------------------------------------------------------
# Local files
# ---------------------------------------------------------------------------------------------------------


def load_txt(
    path: str | Path,
    limit: int | None = None,
    *,
    is_instruct: bool | None = None,
    separator: str = "endoftext",
) -> list[Story]:
    """Stories from a text file: `iter_txt`'s, as a list."""
    return list(iter_txt(path, limit, is_instruct=is_instruct, separator=separator))


def iter_txt(
    path: str | Path,
    limit: int | None = None,
    *,
    is_instruct: bool | None = None,
    separator: str = "endoftext",
) -> Iterator[Story]:
    """Stories from a text file, streamed (the V2 file is 2 GB; a document over `_DOC_MAX_CHARS` is
    skipped, with a note, without ever being held whole).

    `separator` "endoftext" (the published files): stories end at `<|endoftext|>`; a file longer than a
    story without any is an error naming `data.txt_separator: blank_line`, not one giant story that
    cleaning would drop unexplained. "blank_line": stories end at blank lines (hand-made files), so a
    story cannot contain a paragraph break.
    TinyStories-Instruct files are parsed as records (summary, words, features kept); by default that is
    detected from the first document, which then starts with a field such as `Summary:` or `Words:`.
    The notes (documents skipped, blank-line splitting) are printed when the file has been read, at the
    end of the iteration or once `limit` stories were yielded.
    """
    if separator not in TXT_SEPARATORS:
        raise ValueError(f"unknown .txt separator {separator!r}: expected one of {TXT_SEPARATORS}")
    return _iter_txt(Path(path), limit, is_instruct, separator)


def _iter_txt(path: Path, limit: int | None, is_instruct: bool | None, separator: str) -> Iterator[Story]:
    too_long = [0]  # documents skipped for their length, counted by the readers
    n = 0
    # errors="replace": the V2 files contain a few bytes that are not valid UTF-8.
    with open(path, encoding="utf-8", errors="replace") as f:
        if separator == "endoftext":
            _check_has_separator(f, path)
            docs = _eot_documents(f, too_long)
        else:  # lines of at most _DOC_MAX_CHARS: a longer one arrives in pieces, and its document is skipped
            docs = _blank_line_documents(iter(lambda: f.readline(_DOC_MAX_CHARS), ""), too_long)
        first = next(docs, None) if limit is None or limit > 0 else None
        if first is None:
            _say_too_long(path, too_long[0])
            return
        if is_instruct is None:
            is_instruct = instruct_format.looks_like_record(first)
        for story in iter_stories_from_documents(
            itertools.chain([first], docs), f"file:{path.name}", path.stem, limit, is_instruct
        ):
            n += 1
            yield story
    _say_too_long(path, too_long[0])
    if separator == "blank_line":
        print(
            f"note: {path.name}: {n:,} stories, split at blank lines "
            "(data.txt_separator: blank_line)"
        )


def iter_stories_from_documents(
    docs: Iterable[str], source: str, id_prefix: str, limit: int | None, is_instruct: bool
) -> Iterator[Story]:
    """`documents.stories_from_documents`, lazily: the same ids (1-based position of the document) and the
    same skipping of Instruct records without a story; no document is read past the `limit`-th story."""
    if limit is not None and limit <= 0:
        return
    n = 0
    for i, doc in enumerate(docs, 1):
        sid = story_id(id_prefix, i)
        if not is_instruct:
            story = Story(id=sid, text=doc, source=source)
        else:
            record = instruct_format.parse_record(doc)
            # A record without a story cannot train anything; skip it (its id is left unused, so the
            # ids of later records do not depend on it) rather than abort a 2 GB load.
            if not record["story"]:
                continue
            story = instruct_format.record_to_story(record, sid, source)
        yield story
        n += 1
        if limit is not None and n >= limit:
            return


def _check_has_separator(f, path: Path) -> None:
    """Raise if the start of `f` is longer than a story yet has no `<|endoftext|>`; rewinds `f`."""
    head = f.read(_SNIFF_CHARS)
    f.seek(0)
    if EOT in head or len(head.strip()) <= _ONE_STORY_MAX_CHARS:
        return
    where = "anywhere in it" if len(head) < _SNIFF_CHARS else f"in its first {_SNIFF_CHARS:,} characters"
    raise ValueError(
        f"{path}: no '{EOT}' separator {where}, so the whole file would load as one story.\n"
        "If its stories are separated by blank lines, set data.txt_separator: blank_line\n"
        "(load_txt(path, separator='blank_line')); otherwise put a line '<|endoftext|>' after each story."
    )


def _eot_documents(f, too_long: list[int]) -> Iterator[str]:
    """Documents separated by `<|endoftext|>` anywhere in a line, stripped, empties skipped: what
    `instruct_format.iter_documents` yields for a file's lines (universal newlines make them equal), read
    in chunks, so memory stays within `_DOC_MAX_CHARS` whatever the lines; longer documents are counted."""
    parts: list[str] = []
    size, keep, carry = 0, len(EOT) - 1, ""
    while True:
        chunk = f.read(_SNIFF_CHARS)
        pieces = (carry + chunk).split(EOT)
        carry = ""
        if chunk:  # the end of the last piece may be the start of a separator cut by the chunk boundary
            pieces[-1], carry = pieces[-1][:-keep], pieces[-1][-keep:]
        for i, piece in enumerate(pieces):
            size += len(piece)
            if size <= _DOC_MAX_CHARS:
                parts.append(piece)
            else:  # too long to be a story: what was read of it is let go
                parts.clear()
            if i < len(pieces) - 1 or not chunk:  # a separator, or the end of the file, ends the document
                if size > _DOC_MAX_CHARS:
                    too_long[0] += 1
                elif doc := "".join(parts).strip():
                    yield doc
                parts, size = [], 0
        if not chunk:
            return


def _blank_line_documents(lines: Iterable[str], too_long: list[int]) -> Iterator[str]:
    """Documents separated by blank lines (or `<|endoftext|>` lines), stripped, empties skipped; one
    longer than `_DOC_MAX_CHARS` is counted in `too_long`, not kept."""
    buffer: list[str] = []
    size = 0
    for line in itertools.chain(lines, [""]):
        if line.strip() in ("", EOT):
            doc = "\n".join(b.rstrip("\r\n") for b in buffer).strip()
            too_long[0] += size > _DOC_MAX_CHARS
            buffer.clear()
            if doc and size <= _DOC_MAX_CHARS:
                yield doc
            size = 0
        else:
            size += len(line)
            if size <= _DOC_MAX_CHARS:
                buffer.append(line)
            else:
                buffer.clear()


def _say_too_long(path: Path, n: int) -> None:
    if n:
        print(f"note: {path}: skipped {n:,} document(s) of more than {_DOC_MAX_CHARS:,} characters without a "
              f"'{EOT}' separator: no story is that long (a file whose separators are missing, or a runaway text)",
              flush=True)


def load_json(path: str | Path, limit: int | None = None) -> list[Story]:
    """Stories from `TinyStories_all_data` records: a .json list, a .jsonl file, or a directory of shards.

    Mapping: story -> text, instruction.prompt -> prompt, instruction.words ([verb, noun, adjective], the
    order the prompt names them) -> words {"verb", "noun", "adjective"} (other lengths keyed "0", "1", ...),
    instruction.features (e.g. "BadEnding") -> project keys ("bad_ending"), summary, source (e.g. "GPT-4").
    Records that already look like our Story JSON (have "id" and "text") are read as such.
    A .json shard (about 100 MB) is parsed whole; `limit` stops before the next shard is opened.
    """
    return list(iter_json(path, limit))


def iter_json(path: str | Path, limit: int | None = None) -> Iterator[Story]:
    """`load_json`'s stories, one at a time (a .json list is still parsed whole, a shard at a time)."""
    path = Path(path)
    files = _json_shards(path) if path.is_dir() else [path]
    return take((s for f in files for s in _stories_from_json_file(f)), limit)


def _json_shards(directory: Path) -> list[Path]:
    files = sorted(p for p in directory.iterdir() if p.suffix in (".json", ".jsonl"))
    if not files:
        raise FileNotFoundError(f"no .json/.jsonl files in {directory}; {_FORMS_HELP}")
    return files


def _stories_from_json_file(path: Path) -> Iterator[Story]:
    for i, record in enumerate(_json_records(path), 1):
        yield _story_from_json_record(record, story_id(path.stem, i), f"file:{path.name}")


def _json_records(path: Path) -> Iterator[dict]:
    """A JSON list is loaded whole; anything else is read as JSON lines, one record per line."""
    with open(path, encoding="utf-8") as f:
        first = _first_char(f)
        f.seek(0)
        if first == "[":
            yield from json.load(f)
            return
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not a JSON list nor JSON lines ({e})") from e


def _first_char(f) -> str:
    while chunk := f.read(4096):
        if stripped := chunk.lstrip():
            return stripped[0]
    return ""


def _story_from_json_record(record: dict, default_id: str, default_source: str) -> Story:
    if "id" in record and "text" in record:
        return Story.from_dict(record)
    instruction = record.get("instruction") or {}
    # The published shards spell the key "prompt:" (with the colon); accept both.
    prompt = instruction.get("prompt", instruction.get("prompt:"))
    words = instruction.get("words")
    return Story(
        id=default_id,
        text=(record.get("story") or record.get("text") or "").strip(),
        source=record.get("source") or default_source,
        prompt=prompt.strip() if isinstance(prompt, str) else None,
        words=_words_from_json(words, prompt),
        features=instruct_format.feature_keys(instruction.get("features") or []),
        summary=record.get("summary"),
    )


def _words_from_json(words, prompt: str | None) -> dict[str, str] | None:
    if not words:
        return None
    if isinstance(words, dict):
        return {str(k): str(v) for k, v in words.items()}
    words = [str(w) for w in words]
    # Prefer the roles the prompt states ('the verb "hang", the noun "foot" ...') over position.
    roles = dict((role, w) for role, w in re.findall(r'the (verb|noun|adjective) "([^"]+)"', prompt or ""))
    if roles and sorted(roles.values()) == sorted(words):
        return {r: roles[r] for r in instruct_format.WORD_ROLES if r in roles}
    return instruct_format.words_dict(words)


def load_parquet(path: str | Path, limit: int | None = None) -> list[Story]:
    """Stories from a parquet file with a `text` (or `story`) column, read in record batches.

    Optional columns `id`, `source`, `summary` are kept when present.
    """
    return list(iter_parquet(path, limit))


def iter_parquet(path: str | Path, limit: int | None = None) -> Iterator[Story]:
    """`load_parquet`'s stories, one record batch in memory at a time."""
    pq = require_extra("pyarrow.parquet")
    path = Path(path)
    pf = pq.ParquetFile(path)
    names = set(pf.schema_arrow.names)
    text_col = next((c for c in ("text", "story") if c in names), None)
    if text_col is None:
        raise ValueError(f"{path} has no 'text' or 'story' column (columns: {sorted(names)})")
    columns = [text_col] + [c for c in ("id", "source", "summary") if c in names]
    return _iter_parquet_rows(pf, path, text_col, columns, limit)


def _iter_parquet_rows(pf, path: Path, text_col: str, columns: list[str], limit: int | None) -> Iterator[Story]:
    if limit is not None and limit <= 0:
        return
    rows = (row for batch in pf.iter_batches(batch_size=4096, columns=columns) for row in batch.to_pylist())
    n = 0
    for i, row in enumerate(rows, 1):
        text = (row[text_col] or "").strip()
        if text:
            yield Story(
                id=str(row.get("id") or story_id(path.stem, i)),
                text=text,
                source=row.get("source") or f"file:{path.name}",
                summary=row.get("summary"),
            )
            n += 1
            if limit is not None and n >= limit:
                return


_LOADERS = {".txt": iter_txt, ".json": iter_json, ".jsonl": iter_json, ".parquet": iter_parquet}


def load_local(path: str | Path, limit: int | None = None, *, separator: str = "endoftext") -> list[Story]:
    """Load any local form, chosen by extension; a directory loads its files of those forms in name order.

    `separator` is for .txt files (see `load_txt`)."""
    return list(iter_local(path, limit, separator=separator))


def iter_local(path: str | Path, limit: int | None = None, *, separator: str = "endoftext") -> Iterator[Story]:
    """`load_local`'s stories, one at a time. A missing path or unsupported type is said at once."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"TinyStories data not found: looked for {path.resolve()}; {_FORMS_HELP}")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in LOCAL_FORMS)
        if not files:
            raise FileNotFoundError(f"no TinyStories files in directory {path.resolve()}; {_FORMS_HELP}")
        return _iter_many(files, limit, separator)
    loader = _LOADERS.get(path.suffix.lower())
    if loader is None:
        raise ValueError(f"unsupported file type {path.name!r}; {_FORMS_HELP}")
    if loader is iter_txt:
        return iter_txt(path, limit, separator=separator)
    return loader(path, limit)


def _iter_many(paths: Iterable[str | Path], limit: int | None, separator: str = "endoftext") -> Iterator[Story]:
    n = 0
    for p in paths:
        remaining = None if limit is None else limit - n
        if remaining is not None and remaining <= 0:
            return
        for story in iter_local(p, remaining, separator=separator):
            n += 1
            yield story


# ---------------------------------------------------------------------------------------------------------
# One entry point
# ---------------------------------------------------------------------------------------------------------


def load_corpus(
    source: str,
    *,
    paths: Iterable[str | Path] | None = None,
    hub_name: str = DEFAULT_HUB_NAME,
    hub_split: str = "train",
    hub_data_files: str | list[str] | None = None,
    hub_revision: str | None = None,
    limit: int | None = None,
    streaming: bool | None = None,
    txt_separator: str = "endoftext",
) -> list[Story]:
    """Load real TinyStories from "files" (`paths`: files or directories, in order) or the "hub".

    `limit` caps the total; `txt_separator` (data.txt_separator) is how local .txt files separate stories,
    see `load_txt`. (The "storyteller" source is generated, not loaded, and lives elsewhere.)
    """
    if source == "hub":
        _check_source(source, txt_separator)
        return load_hub(
            hub_name,
            split=hub_split,
            limit=limit,
            streaming=streaming,
            data_files=hub_data_files,
            revision=hub_revision,
        )
    return list(iter_corpus(source, paths=paths, hub_name=hub_name, hub_split=hub_split,
                            hub_data_files=hub_data_files, hub_revision=hub_revision, limit=limit,
                            streaming=streaming, txt_separator=txt_separator))


def iter_corpus(
    source: str,
    *,
    paths: Iterable[str | Path] | None = None,
    hub_name: str = DEFAULT_HUB_NAME,
    hub_split: str = "train",
    hub_data_files: str | list[str] | None = None,
    hub_revision: str | None = None,
    limit: int | None = None,
    streaming: bool | None = None,
    txt_separator: str = "endoftext",
) -> Iterator[Story]:
    """`load_corpus`'s stories, one at a time: local files are read as they are consumed, in bounded
    memory whatever their size. The settings are checked at once, the files as they are reached. The hub
    (`load_hub`) is loaded as a list first: `datasets` keeps the rows on disk, the Stories are held."""
    _check_source(source, txt_separator)
    if source == "files":
        if isinstance(paths, (str, Path)):
            paths = [paths]
        if not paths:
            raise ValueError(f"source 'files' needs paths: a list of files or directories; {_FORMS_HELP}")
        return _iter_many(list(paths), limit, txt_separator)
    return iter(load_hub(hub_name, split=hub_split, limit=limit, streaming=streaming, data_files=hub_data_files,
                         revision=hub_revision))


def _check_source(source: str, txt_separator: str) -> None:
    if txt_separator not in TXT_SEPARATORS:
        raise ValueError(f"unknown txt_separator {txt_separator!r}: expected one of {TXT_SEPARATORS}")
    if source not in ("files", "hub"):
        raise ValueError(f"unknown corpus source {source!r}: expected 'files' or 'hub'")
