"""The kit's expected failures, as against its bugs.

An expected failure is one the user can fix or wait out: an invalid profile, an artifact another process
is writing, a hub that cannot be reached, a corpus that cleaning emptied. Its message says what happened
and what to do, so the `tinystories` command prints just that message and exits non-zero; anything else
is a bug and keeps its traceback (as does every error under `tinystories --debug`).
"""

from __future__ import annotations


class KitError(Exception):
    """An expected failure whose message says what happened and what to do. Subclass it together with the
    builtin it refines (`class ArtifactBusy(KitError, RuntimeError)`), so existing `except`s still catch it."""
