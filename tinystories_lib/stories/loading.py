"""Load the real TinyStories corpus, in every form it is published in, as one record type (Story).

Forms:
  * .txt   – the hub's text files (TinyStories-train.txt, TinyStoriesV2-GPT4-train.txt, the Instruct
             files): stories separated by `<|endoftext|>` lines. `load_txt` streams them; hand-made files
             whose stories are separated by blank lines load with `separator="blank_line"`.
  * .json  – `TinyStories_all_data` shards (data00.json ...): a JSON list of records
             {story, instruction: {prompt, words, features}, summary, source}. JSONL is accepted too,
             including our own `stories.records.write_jsonl` output.
  * .parquet – the hub's default config (column `text`).
  * the hub itself through `datasets` (`load_hub`); each failure is a `HubError` saying what was asked
    for, what happened and what to do (unreachable, no such dataset / revision / file, access refused).

`load_corpus` picks the loader for a source; cleaning and the train/val split are `stories.cleaning`'s.
`datasets`, `pyarrow` and `datasketch` are optional (`pip install 'tinystories-lab[data]'`) and are
imported only by the functions that need them.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import itertools
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

from tinystories_lib.stories import instruct_format
from tinystories_lib.stories.instruct_format import iter_documents
from tinystories_lib.stories.records import EOT, Story

LOCAL_FORMS = (".txt", ".json", ".jsonl", ".parquet")
_FORMS_HELP = (
    "accepted: a .txt file with stories separated by '<|endoftext|>' lines, a TinyStories_all_data "
    ".json shard or .jsonl file, a .parquet file with a 'text' column, or a directory of those"
)
DEFAULT_HUB_NAME = "roneneldan/TinyStories"
TXT_SEPARATORS = ("endoftext", "blank_line")  # how a .txt file separates stories (data.txt_separator)
_ONE_STORY_MAX_CHARS = 2000  # longer than this with no separator, a .txt file is not one story
_SNIFF_CHARS = 1 << 20  # how much of a .txt file is searched for a separator before loading it


def _require(module: str):
    """Import an optional dependency, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{module} is needed for this; install the data extras: pip install 'tinystories-lab[data]'"
        ) from e


def _story_id(stem: str, index: int) -> str:
    # 1-based and zero-padded so ids sort in file order and stay stable across runs.
    return f"{stem}-{index:06d}"


def _take(items: Iterable, limit: int | None) -> Iterator:
    return iter(items) if limit is None else itertools.islice(items, max(limit, 0))


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
    """Stories from a text file, read line by line (the V2 file is 2 GB).

    `separator` "endoftext" (the published files): stories end at `<|endoftext|>`; a file longer than a
    story without any is an error naming `data.txt_separator: blank_line`, not one giant story that
    cleaning would drop unexplained. "blank_line": stories end at blank lines (hand-made files), so a
    story cannot contain a paragraph break.
    TinyStories-Instruct files are parsed as records (summary, words, features kept); by default that is
    detected from the first document, which then starts with a field such as `Summary:` or `Words:`.
    """
    if separator not in TXT_SEPARATORS:
        raise ValueError(f"unknown .txt separator {separator!r}: expected one of {TXT_SEPARATORS}")
    path = Path(path)
    # errors="replace": the V2 files contain a few bytes that are not valid UTF-8.
    with open(path, encoding="utf-8", errors="replace") as f:
        if separator == "endoftext":
            _check_has_separator(f, path)
            docs = iter_documents(f, line_based=True)
        else:
            docs = _blank_line_documents(f)
        first = next(docs, None)
        if first is None:
            return []
        if is_instruct is None:
            is_instruct = instruct_format.looks_like_record(first)
        stories = _stories_from_documents(
            itertools.chain([first], docs), f"file:{path.name}", path.stem, limit, is_instruct
        )
    if separator == "blank_line":
        print(
            f"note: {path.name}: {len(stories):,} stories, split at blank lines "
            "(data.txt_separator: blank_line)"
        )
    return stories


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


def _blank_line_documents(lines: Iterable[str]) -> Iterator[str]:
    """Documents separated by blank lines (or `<|endoftext|>` lines), stripped, empties skipped."""
    buffer: list[str] = []
    for line in itertools.chain(lines, [""]):
        if line.strip() in ("", EOT):
            doc = "\n".join(b.rstrip("\r\n") for b in buffer).strip()
            buffer.clear()
            if doc:
                yield doc
        else:
            buffer.append(line)


def _stories_from_documents(
    docs: Iterable[str], source: str, id_prefix: str, limit: int | None, is_instruct: bool
) -> list[Story]:
    stories: list[Story] = []
    for i, doc in enumerate(docs, 1):
        if limit is not None and len(stories) >= limit:
            break
        sid = _story_id(id_prefix, i)
        if not is_instruct:
            stories.append(Story(id=sid, text=doc, source=source))
            continue
        record = instruct_format.parse_record(doc)
        # A record without a story cannot train anything; skip it (its id is left unused, so the
        # ids of later records do not depend on it) rather than abort a 2 GB load.
        if record["story"]:
            stories.append(instruct_format.record_to_story(record, sid, source))
    return stories


def load_json(path: str | Path, limit: int | None = None) -> list[Story]:
    """Stories from `TinyStories_all_data` records: a .json list, a .jsonl file, or a directory of shards.

    Mapping: story -> text, instruction.prompt -> prompt, instruction.words ([verb, noun, adjective], the
    order the prompt names them) -> words {"verb", "noun", "adjective"} (other lengths keyed "0", "1", ...),
    instruction.features (e.g. "BadEnding") -> project keys ("bad_ending"), summary, source (e.g. "GPT-4").
    Records that already look like our Story JSON (have "id" and "text") are read as such.
    A .json shard (about 100 MB) is parsed whole; `limit` stops before the next shard is opened.
    """
    path = Path(path)
    files = _json_shards(path) if path.is_dir() else [path]
    stories = (s for f in files for s in _stories_from_json_file(f))
    return list(_take(stories, limit))


def _json_shards(directory: Path) -> list[Path]:
    files = sorted(p for p in directory.iterdir() if p.suffix in (".json", ".jsonl"))
    if not files:
        raise FileNotFoundError(f"no .json/.jsonl files in {directory}; {_FORMS_HELP}")
    return files


def _stories_from_json_file(path: Path) -> Iterator[Story]:
    for i, record in enumerate(_json_records(path), 1):
        yield _story_from_json_record(record, _story_id(path.stem, i), f"file:{path.name}")


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
    pq = _require("pyarrow.parquet")
    path = Path(path)
    pf = pq.ParquetFile(path)
    names = set(pf.schema_arrow.names)
    text_col = next((c for c in ("text", "story") if c in names), None)
    if text_col is None:
        raise ValueError(f"{path} has no 'text' or 'story' column (columns: {sorted(names)})")
    columns = [text_col] + [c for c in ("id", "source", "summary") if c in names]
    rows = (row for batch in pf.iter_batches(batch_size=4096, columns=columns) for row in batch.to_pylist())
    stories = []
    for i, row in enumerate(rows, 1):
        if limit is not None and len(stories) >= limit:
            break
        text = (row[text_col] or "").strip()
        if text:
            stories.append(
                Story(
                    id=str(row.get("id") or _story_id(path.stem, i)),
                    text=text,
                    source=row.get("source") or f"file:{path.name}",
                    summary=row.get("summary"),
                )
            )
    return stories


_LOADERS = {".txt": load_txt, ".json": load_json, ".jsonl": load_json, ".parquet": load_parquet}


def load_local(path: str | Path, limit: int | None = None, *, separator: str = "endoftext") -> list[Story]:
    """Load any local form, chosen by extension; a directory loads its files of those forms in name order.

    `separator` is for .txt files (see `load_txt`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"TinyStories data not found: looked for {path.resolve()}; {_FORMS_HELP}")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in LOCAL_FORMS)
        if not files:
            raise FileNotFoundError(f"no TinyStories files in directory {path.resolve()}; {_FORMS_HELP}")
        return _load_many(files, limit, separator)
    loader = _LOADERS.get(path.suffix.lower())
    if loader is None:
        raise ValueError(f"unsupported file type {path.name!r}; {_FORMS_HELP}")
    if loader is load_txt:
        return load_txt(path, limit, separator=separator)
    return loader(path, limit)


def _load_many(paths: Iterable[str | Path], limit: int | None, separator: str = "endoftext") -> list[Story]:
    stories: list[Story] = []
    for p in paths:
        remaining = None if limit is None else limit - len(stories)
        if remaining is not None and remaining <= 0:
            break
        stories.extend(load_local(p, remaining, separator=separator))
    return stories


# ---------------------------------------------------------------------------------------------------------
# The Hugging Face hub
# ---------------------------------------------------------------------------------------------------------


class HubError(RuntimeError):
    """Loading from the hub failed; the message says what was asked for, what happened and what to do."""


class HubUnavailableError(HubError):
    """The hub could not be reached (offline, blocked, or HF_HUB_OFFLINE with nothing cached)."""


class HubNotFoundError(HubError, FileNotFoundError):
    """The hub answered that the dataset, the revision or a data file does not exist."""


class HubAccessError(HubError, PermissionError):
    """The hub refused access (401/403): a gated or private dataset, no token or one without access."""


def stories_from_rows(
    rows: Iterable[dict],
    source: str,
    limit: int | None = None,
    *,
    id_prefix: str = "hub",
    line_based: bool = False,
    is_instruct: bool = False,
    text_column: str = "text",
) -> list[Story]:
    """Convert `datasets` rows (a Dataset, IterableDataset or any iterable of dicts) into Stories.

    `line_based` is for the hub's .txt files, which the `datasets` text builder yields one line per row:
    lines are reassembled into stories at `<|endoftext|>`. `is_instruct` parses each document as a
    TinyStories-Instruct record. Iteration stops once `limit` stories are made, so a streamed 2 GB file
    is read only as far as needed.
    """
    docs = iter_documents((row[text_column] or "" for row in rows), line_based=line_based)
    return _stories_from_documents(docs, source, id_prefix, limit, is_instruct)


def load_hub(
    name: str = DEFAULT_HUB_NAME,
    split: str = "train",
    limit: int | None = None,
    streaming: bool | None = None,
    data_files: str | list[str] | None = None,
    revision: str | None = None,
) -> list[Story]:
    """Load TinyStories from the Hugging Face hub with `datasets.load_dataset`.

    * V1: `load_hub()` – the default parquet config, one story per row.
    * V2 (GPT-4 only): `load_hub(data_files="TinyStoriesV2-GPT4-train.txt")` – a 2 GB text file.
    * Instruct: `load_hub("roneneldan/TinyStoriesInstruct")` – text lines reassembled into records.

    `streaming` defaults to on when `limit` is given or a .txt file / the Instruct set is asked for, so
    only what is needed is downloaded. `name` may also be a local directory laid out like the hub repo.
    Hub failures raise a HubError saying what was asked for, what happened and what to do:
    HubUnavailableError (unreachable, or offline with nothing cached), HubNotFoundError (no such dataset,
    revision or file), HubAccessError (gated or private).
    """
    datasets = _require("datasets")
    is_instruct = "instruct" in name.lower()
    offline = _hub_offline()
    what = _describe_request(name, split, data_files, revision)
    if streaming is None:
        # Offline, only a cached (non-streamed) copy can work.
        streaming = not offline and (limit is not None or data_files is not None or is_instruct)
    if isinstance(data_files, str) and split != "train":
        # A bare file name is mapped to the "train" split by `datasets`; keep the split the caller asked for.
        data_files = {split: data_files}
    if not offline and not Path(name).exists():
        _check_reachable(name, what)
    try:
        ds = datasets.load_dataset(
            name, split=split, data_files=data_files, revision=revision, streaming=streaming
        )
        return stories_from_rows(
            ds,
            source=f"hub:{name}",
            limit=limit,
            id_prefix=_hub_id_prefix(name, split, data_files),
            # The text builder yields one line per row; parquet rows are whole stories.
            line_based=getattr(ds.info, "builder_name", None) == "text",
            is_instruct=is_instruct,
        )
    except Exception as e:
        if Path(name).exists():
            raise
        error = _hub_error(e, name, what, data_files, revision)
        if error is None:
            raise
        raise error from e


def _describe_request(name, split, data_files, revision) -> str:
    parts = [f"dataset {name!r}", f"split {split!r}"]
    if data_files:
        parts.append(f"data_files {data_files!r}")
    if revision:
        parts.append(f"revision {revision!r}")
    return ", ".join(parts)


def _hub_id_prefix(name: str, split: str, data_files) -> str:
    files = list(data_files.values()) if isinstance(data_files, dict) else data_files
    if isinstance(files, list) and len(files) == 1:
        files = files[0]
    if isinstance(files, str):
        return Path(files).stem
    return f"{Path(name).name}-{split}"


def _hub_offline() -> bool:
    """Offline mode as `datasets` sees it (read at import) or as the environment says now."""
    env = os.environ.get("HF_HUB_OFFLINE", os.environ.get("HF_DATASETS_OFFLINE", ""))
    if env.strip().upper() in ("1", "ON", "YES", "TRUE"):
        return True
    try:
        return bool(importlib.import_module("datasets.config").HF_HUB_OFFLINE)
    except ImportError:
        return False


def _hub_endpoint() -> str:
    try:
        return importlib.import_module("huggingface_hub.constants").ENDPOINT
    except ImportError:
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the Hugging Face hub can be used now: not in offline mode, `datasets` installed, and the
    endpoint answering (any HTTP status counts)."""
    if _hub_offline() or importlib.util.find_spec("datasets") is None:
        return False
    return _endpoint_answers(_hub_endpoint(), timeout)


@functools.lru_cache(maxsize=8)  # asked once per process (reproduce decides once for all its notebooks)
def _endpoint_answers(endpoint: str, timeout: float) -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False
    return True


def hub_commit(name: str, revision: str | None = None) -> str | None:
    """The commit a hub dataset's `revision` (default: main) points at, to record what a run read; None
    when it cannot be asked (offline, a local directory)."""
    if Path(name).exists() or _hub_offline():
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(name, revision=revision).sha
    except Exception:  # recording the commit must never stop a run that loaded its data
        return None


def _check_reachable(name: str, what: str, timeout: float = 10.0) -> None:
    """Fail fast: unreachable, `datasets` retries with back-off for tens of seconds before giving up.

    Any HTTP answer (even an error status) means the hub is reachable; urllib honours *_PROXY settings.
    """
    endpoint = _hub_endpoint()
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as e:
        raise HubUnavailableError(_unavailable_message(name, what, e, endpoint)) from e


def _is_network_error(e: BaseException) -> bool:
    """True for connection failures, whichever HTTP stack (requests, httpx, urllib3) raised them."""
    return any(_is_connection_failure(err) for err in _exception_chain(e))


def _is_connection_failure(err: BaseException, local_entry: bool = True) -> bool:
    """One exception that is a connection failure; `local_entry`: count the hub client's "not cached and
    could not be fetched" (LocalEntryNotFoundError) as one."""
    if isinstance(err, (ConnectionError, TimeoutError, urllib.error.URLError)):
        return True
    name = type(err).__name__
    return (
        name == "OfflineModeIsEnabled"
        or (local_entry and name == "LocalEntryNotFoundError")
        or name.endswith(("ConnectError", "ConnectionError", "ConnectTimeout", "ReadTimeout"))
    )


def _hub_error(e: BaseException, name: str, what: str, data_files, revision) -> HubError | None:
    """The HubError for what the hub answered, or None for an error that is not the hub's.

    `datasets` turns the hub client's errors into its own (DatasetNotFoundError, FileNotFoundError), by
    message and sometimes dropping the original, so its errors are read first; then the first HTTP answer
    or connection failure in the whole chain (a plain 403 reaches `datasets` as "not in the local cache").
    """
    args = (name, what, data_files, revision)
    for err in _cause_chain(e):
        if found := _classify(err, *args):
            return found
    for err in _exception_chain(e):
        if _is_connection_failure(err, local_entry=False):
            break
        if (_status(err) or 0) >= 400 and (found := _classify(err, *args)):
            return found
    if _is_network_error(e):
        return HubUnavailableError(_unavailable_message(name, what, e))
    return None


def _status(err: BaseException) -> int | None:
    return getattr(getattr(err, "response", None), "status_code", None)


def _classify(err: BaseException, name: str, what: str, data_files, revision) -> HubError | None:
    """The HubError one exception stands for, by the hub client's class, HTTP status or `datasets`' text."""
    classes = {c.__name__ for c in type(err).__mro__}
    text = str(err)
    status = _status(err)
    url = str(getattr(getattr(err, "response", None), "url", "") or "")
    if "GatedRepoError" in classes or status in (401, 403):
        return HubAccessError(_access_message(name, what, err, status or 401))
    if "RevisionNotFoundError" in classes:
        return HubNotFoundError(_revision_message(name, what, err, revision))
    # A 404 outside a file, or for the card `datasets` asks for first, is the hub saying there is no repo.
    if "RepositoryNotFoundError" in classes or (
        status == 404 and ("/resolve/" not in url or url.endswith("/README.md"))
    ):
        return HubNotFoundError(_repo_message(name, what, err))
    if status == 404 or ("EntryNotFoundError" in classes and "LocalEntryNotFoundError" not in classes):
        return HubNotFoundError(_file_message(name, what, err, data_files, revision))
    if "DatasetNotFoundError" in classes:
        if "gated" in text:
            return HubAccessError(_access_message(name, what, err, 401 if "authenticated" in text else 403))
        if text.startswith("Revision "):
            return HubNotFoundError(_revision_message(name, what, err, revision))
        return HubNotFoundError(_repo_message(name, what, err))
    if "DataFilesNotFoundError" in classes or (isinstance(err, FileNotFoundError) and "hf://" in text):
        return HubNotFoundError(_file_message(name, what, err, data_files, revision))
    return None


def _cause_chain(e: BaseException | None) -> Iterator[BaseException]:
    """`e` and its explicit causes: an implicit context may be an error `datasets` handled and went past."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__


def _brief(error: BaseException) -> str:
    """The first line of an error, without the long lists `datasets` appends (e.g. every file extension)."""
    line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    line = re.sub(r" with any supported extension \[.*", "", line)
    # `datasets` prefixes a missing hub file with the local lookup it also tried; the hub part is the news.
    line = line[line.find("Unable to find") :] if "Unable to find" in line else line
    return f"{type(error).__name__}: {line[:300]}"


def _dataset_page(name: str) -> str:
    return f"{_hub_endpoint().rstrip('/')}/datasets/{name}"


def _repo_message(name: str, what: str, error: BaseException) -> str:
    return (
        f"could not load {what}: the Hugging Face hub has no such dataset ({_brief(error)}).\n"
        f"Check data.hub_name (the TinyStories datasets are {DEFAULT_HUB_NAME} and\n"
        "roneneldan/TinyStoriesInstruct). A private dataset also answers 'not found' to a request without a\n"
        "token: if it is yours, set HF_TOKEN or log in once with `hf auth login` (older clients:\n"
        "`huggingface-cli login`)."
    )


def _revision_message(name: str, what: str, error: BaseException, revision: str | None) -> str:
    return (
        f"could not load {what}: the dataset has no such revision on the Hugging Face hub "
        f"({_brief(error)}).\nSet data.hub_revision to a branch, tag or commit of the dataset "
        f"(see {_dataset_page(name)}/commits/main),\nor leave it unset (null) for the latest."
    )


def _file_message(name: str, what: str, error: BaseException, data_files, revision: str | None) -> str:
    listing = _repo_files(name, revision)
    have = f"\nThe dataset's files: {', '.join(listing)}." if listing else ""
    return (
        f"could not load {what}: the dataset on the Hugging Face hub has no such file "
        f"({_brief(error)}).{have}\n"
        "Set data.hub_data_files (or data.val_hub_data_files) to one of the dataset's files, e.g.\n"
        "TinyStoriesV2-GPT4-train.txt, or leave it unset (null) for the dataset's default files; "
        f"see {_dataset_page(name)}/tree/main."
    )


def _repo_files(name: str, revision: str | None, limit: int = 20) -> list[str]:
    """The dataset's top-level files and folders, to name in an error; empty if they cannot be listed."""
    try:
        hub = importlib.import_module("huggingface_hub")
        entries = hub.HfApi().list_repo_tree(name, repo_type="dataset", revision=revision)
        names = sorted(e.path + ("/" if type(e).__name__ == "RepoFolder" else "") for e in entries)
    except Exception:
        return []
    names = [n for n in names if not n.startswith(".")]
    return names[:limit] + (["..."] if len(names) > limit else [])


def _access_message(name: str, what: str, error: BaseException, status: int) -> str:
    why = (
        "it needs a token: the dataset is gated or private and the request carried none, or an invalid one"
        if status == 401
        else "the token in use has no access to it: the dataset is gated or private"
    )
    return (
        f"could not load {what}: the Hugging Face hub refused access ({status}): {why} ({_brief(error)}).\n"
        f"To fix it: if the dataset is gated, accept its terms on {_dataset_page(name)} while logged in;\n"
        "then give this process a token with read access: set HF_TOKEN=<token> (from\n"
        "https://huggingface.co/settings/tokens) or log in once with `hf auth login` (older clients:\n"
        "`huggingface-cli login`). Or download the file and set data.source: files and data.paths."
    )


def _exception_chain(e: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _unavailable_message(name: str, what: str, error: BaseException, endpoint: str | None = None) -> str:
    where = f" at {endpoint}" if endpoint else ""
    example = (
        "TinyStories-Instruct-train.txt" if "instruct" in name.lower() else "TinyStoriesV2-GPT4-train.txt"
    )
    return (
        f"could not load {what} from the Hugging Face hub{where}: {type(error).__name__}: {error}.\n"
        "To fix it, do one of these:\n"
        "  * run where the hub is reachable (check HF_ENDPOINT and any proxy settings);\n"
        f"  * download the dataset's .txt file once (https://huggingface.co/datasets/{name}/tree/main,\n"
        f"    e.g. {example}) and load it locally: in the config set data.source: files\n"
        "    and data.paths: [path/to/the/file.txt];\n"
        "  * to reuse a copy already in the Hugging Face cache (HF_HOME), set HF_HUB_OFFLINE=1; if it is\n"
        "    already set and nothing is cached, set HF_HUB_OFFLINE=0 and run online once."
    )


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
    if txt_separator not in TXT_SEPARATORS:
        raise ValueError(f"unknown txt_separator {txt_separator!r}: expected one of {TXT_SEPARATORS}")
    if source == "files":
        if isinstance(paths, (str, Path)):
            paths = [paths]
        if not paths:
            raise ValueError(f"source 'files' needs paths: a list of files or directories; {_FORMS_HELP}")
        return _load_many(paths, limit, txt_separator)
    if source == "hub":
        return load_hub(
            hub_name,
            split=hub_split,
            limit=limit,
            streaming=streaming,
            data_files=hub_data_files,
            revision=hub_revision,
        )
    raise ValueError(f"unknown corpus source {source!r}: expected 'files' or 'hub'")
