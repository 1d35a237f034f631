"""Real TinyStories from the Hugging Face hub through `datasets`, and one clear error per way it can fail.

    load_hub(name, split, data_files=..., revision=..., limit=...)   stories, streamed when a limit is given
    stories_from_rows(rows, ...)        `datasets` rows (parquet stories or .txt lines) as Stories
    hub_reachable(), hub_commit(name)   whether the hub answers now; which commit a revision names
Failures raise a HubError saying what was asked, what happened and what to do: HubUnavailableError
(unreachable, or offline with nothing cached), HubNotFoundError (no such dataset, revision or file),
HubAccessError (gated or private). Local files are `stories.loading`'s.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

from tinystories_lib.errors import KitError
from tinystories_lib.stories.documents import require_extra, stories_from_documents
from tinystories_lib.stories.instruct_format import iter_documents
from tinystories_lib.stories.records import Story

DEFAULT_HUB_NAME = "roneneldan/TinyStories"


# ---------------------------------------------------------------------------------------------------------
# The Hugging Face hub
# ---------------------------------------------------------------------------------------------------------


class HubError(KitError, RuntimeError):
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
    return stories_from_documents(docs, source, id_prefix, limit, is_instruct)


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
    datasets = require_extra("datasets")
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
