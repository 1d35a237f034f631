"""Progress bars: widgets in JupyterLab, plain text lines when run headless (papermill, CI, the CLI).

Headless runs set TINYSTORIES_PROGRESS=text, so an executed notebook and the terminal show readable
lines every few seconds instead of widget state that no one can see.
"""

from __future__ import annotations

import os
import sys


def bar(**kwargs):
    if os.environ.get("TINYSTORIES_PROGRESS", "auto") == "text":
        from tqdm.std import tqdm

        kwargs.setdefault("mininterval", float(os.environ.get("TINYSTORIES_PROGRESS_INTERVAL", "10")))
        kwargs.setdefault("ascii", True)
        return tqdm(file=sys.stdout, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(**kwargs)
