"""JupyterLab settings for `make lab` (passed with --config): the notebooks open unmodified on any Python.

A notebook keeps its kernel's Python version in metadata.language_info, and JupyterLab marks a notebook
modified as soon as the kernel it starts reports another one. The notebooks are committed with the team's
version; this contents manager shows them with the version of this Python (the kernel's too: `make lab`
runs the venv's jupyter and the tinystories-lab kernel is the venv's python).
"""

import platform

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager


class ContentsManager(AsyncLargeFileManager):
    async def get(self, path, content=True, type=None, format=None, **kw):
        model = await super().get(path, content=content, type=type, format=format, **kw)
        if model["type"] == "notebook" and model.get("content"):
            info = model["content"]["metadata"].get("language_info", {})
            if info.get("name") == "python" and "version" in info:
                info["version"] = platform.python_version()
        return model


c.ServerApp.contents_manager_class = ContentsManager  # noqa: F821 (c: the config object Jupyter passes in)
