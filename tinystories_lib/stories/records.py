"""The one record type every story source produces (storyteller, LLM, hub, local files), and its JSONL
files: written whole or not at all (temporary name, renamed; `JsonlWriter` one story at a time, so a
corpus of millions is never held), read lazily, skipping lines that are not stories."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tinystories_lib.locks import temp_path

EOT = "<|endoftext|>"  # the marker between stories in the published .txt files and in token streams


@dataclass
class Story:
    """A story and its provenance.

    `words` holds the prompt's three words ({"noun": ..., "verb": ..., "adjective": ...}),
    `features` the prompt's feature names (e.g. "dialogue", "bad_ending"), `source` where the
    text came from ("storyteller", an LLM model name, "hub:roneneldan/TinyStories", "file:...").
    `facts` is filled by the storyteller only: who/what/where/pronouns, for exact probes.
    """

    id: str
    text: str
    source: str
    prompt: str | None = None
    words: dict[str, str] | None = None
    features: list[str] = field(default_factory=list)
    summary: str | None = None
    facts: dict | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict) -> Story:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


class JsonlWriter:
    """Stories written one at a time to `path`'s temporary name (`locks.temp_path`: this process's own),
    which `commit()` renames over `path`; leaving the block without `commit()` (an error) removes it, so
    `path` is whole or as it was. `n` counts the stories written; `line` is the 0-based line of the last.

        with JsonlWriter(path) as w:
            for s in stories:
                w.write(s)
            w.commit()
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_path(self.path)
        self._f = open(self.tmp, "w", encoding="utf-8")
        self.n = 0

    def write(self, story: Story) -> None:
        self._f.write(story.to_json() + "\n")
        self.n += 1

    @property
    def line(self) -> int:
        return self.n - 1

    def close(self) -> None:
        """Finish writing the temporary file (it can then be read back) without renaming it."""
        if not self._f.closed:
            self._f.close()

    def commit(self) -> None:
        self.close()
        self.tmp.replace(self.path)

    def abort(self) -> None:
        self.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc) -> None:
        if self.tmp.exists():  # not committed
            self.abort()


def write_jsonl(stories: Iterable[Story], path: str | Path) -> int:
    """Write stories to `path` atomically (tmp file + rename), one at a time. Returns the count."""
    with JsonlWriter(path) as w:
        for s in stories:
            w.write(s)
        w.commit()
    return w.n


def read_jsonl(path: str | Path) -> Iterator[Story]:
    """The stories of a JSONL file. A line that is not a story (torn by a kill, damaged on disk, edited by
    hand) is skipped, as generation skips it (llm.jsonl.read_jsonl_records), and said once with the file
    and its line numbers: one bad line must not stop every rerun of the corpus stage."""
    bad = []
    # errors="replace": a damaged byte costs one character (or the line, if it breaks the JSON), as in loading
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                story = Story.from_dict(json.loads(line))
            except (ValueError, TypeError):  # not JSON; JSON but not a story record
                bad.append(n)
                continue
            yield story
    if bad:
        lines = ", ".join(map(str, bad[:10])) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        print(f"note: {path}: skipped {len(bad)} line(s) that are not story records (line {lines})", flush=True)
