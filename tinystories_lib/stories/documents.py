"""Stories from raw documents, shared by the local-file loaders and the hub: stable ids in file order,
limits, Instruct records parsed, and the optional dependencies named with how to install them."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
from collections.abc import Iterable, Iterator

from tinystories_lib.stories import instruct_format
from tinystories_lib.stories.records import Story


def require_extra(module: str):
    """Import an optional dependency, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{module} is needed for this; install the data extras: pip install 'tinystories-lab[data]'"
        ) from e


def story_id(stem: str, index: int) -> str:
    # 1-based and zero-padded so ids sort in file order and stay stable across runs.
    return f"{stem}-{index:06d}"


def take(items: Iterable, limit: int | None) -> Iterator:
    return iter(items) if limit is None else itertools.islice(items, max(limit, 0))


def stories_from_documents(
    docs: Iterable[str], source: str, id_prefix: str, limit: int | None, is_instruct: bool
) -> list[Story]:
    stories: list[Story] = []
    for i, doc in enumerate(docs, 1):
        if limit is not None and len(stories) >= limit:
            break
        sid = story_id(id_prefix, i)
        if not is_instruct:
            stories.append(Story(id=sid, text=doc, source=source))
            continue
        record = instruct_format.parse_record(doc)
        # A record without a story cannot train anything; skip it (its id is left unused, so the
        # ids of later records do not depend on it) rather than abort a 2 GB load.
        if record["story"]:
            stories.append(instruct_format.record_to_story(record, sid, source))
    return stories
