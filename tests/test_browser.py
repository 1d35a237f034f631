"""The notebooks in a real browser: JupyterLab started by `make lab` itself, driven in chromium by Playwright.

Opens notebook 06 on the tiny profile (`make lab PROFILE=tiny`), checks it opens unmodified on the
project's kernel, runs every cell, checks none failed, then uses the sampler and the attention explorer as
a reader would. Notebook 04 follows (its models are the ones 06 trained). Screenshots go to
build/test-artifacts/browser/ (TEST_ARTIFACTS overrides), and with DOCS_IMG=1 (`make test-browser`) to
docs/img/ as well. BROWSER_PROFILE=smoke BROWSER_RUNS=runs reuses the models of a `make reproduce` run
instead, for screenshots of models that write stories.

    apt-get install chromium && pip install -e ".[browser]"     # once; Playwright's own browsers are not used
    make test-browser                                           # or: pytest -m browser tests/test_browser.py
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM") or next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)

pytestmark = [
    pytest.mark.browser, pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium); "
                                                "make test-browser runs this test"),
    pytest.mark.skipif(shutil.which("make") is None, reason="the test starts JupyterLab with `make lab`"),
]
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright is not installed (pip install -e '.[browser]', or make test-browser)")

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", REPO / "build" / "test-artifacts")) / "browser"
PROFILE = os.environ.get("BROWSER_PROFILE", "tiny")
RUN_TIMEOUT_S = 300  # notebook 06 on tiny trains its models first: about a minute on 2 cores
FAILED = ("[...document.querySelectorAll('.jp-OutputArea-output[data-mime-type=\"application/vnd.jupyter.stderr\"]')]"
          ".filter(e => e.innerText.includes('Traceback (most recent call last)'))")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lab_settings(root: Path) -> Path:
    """User settings for this server only: no autosave (the run must not write outputs into notebooks/),
    every cell in the page (no windowing, so the test can find any of them), no news toast on screenshots."""
    for plugin, body in (("docmanager-extension/plugin", '{"autosave": false}'),
                         ("notebook-extension/tracker", '{"windowingMode": "none"}'),
                         ("apputils-extension/notification", '{"fetchNews": "false", "doNotDisturbMode": true}')):
        path = root / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    return root


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """`make lab` on a free port, with temporary runs/figures folders and Jupyter settings; yields the URL
    with its token that it prints, as a user would copy it."""
    tmp = tmp_path_factory.mktemp("lab")
    port = free_port()
    runs = Path(os.environ.get("BROWSER_RUNS") or tmp / "runs").resolve()  # the kernel runs in notebooks/
    env = {**{k: v for k, v in os.environ.items() if k != "JUPYTER_TOKEN"}, "TINYSTORIES_RUNS": str(runs),
           "TINYSTORIES_FIGURES": str(tmp / "figures"), "JUPYTER_CONFIG_DIR": str(tmp / "config"),
           "JUPYTERLAB_SETTINGS_DIR": str(lab_settings(tmp / "settings")),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces")}
    venv = Path(sys.prefix)
    # -o: take the installed venv as it is (the test must not reinstall it); the kernel is registered if missing
    cmd = ["make", "-s", "-o", str(venv / ".installed"), "lab", f"VENV={venv}", f"PROFILE={PROFILE}",
           f"LAB_PORT={port}", "LAB_FLAGS=--no-browser"]
    log = open(tmp / "lab.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    printed = re.compile(rf"(http://localhost:{port})/lab\?token=([0-9a-f]+)")
    try:
        for _ in range(120):
            if m := printed.search((tmp / "lab.log").read_text()):
                break
            assert proc.poll() is None, f"make lab exited: {(tmp / 'lab.log').read_text()[-2000:]}"
            time.sleep(0.5)
        else:
            pytest.fail(f"make lab printed no URL in 60 s: {(tmp / 'lab.log').read_text()[-2000:]}")
        url, token = m.groups()
        urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=10)  # the printed URL works
        yield url, token
    finally:
        stop_group(proc)
        log.close()


def stop_group(proc: subprocess.Popen, wait_s: float = 20) -> None:
    """SIGTERM to make and the jupyter it started (their own process group), SIGKILL to what outlives it
    (a jupyter still starting up can miss SIGTERM)."""
    os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        proc.poll()  # reap make, so only live processes keep the group
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def page(lab):
    with sync_api.sync_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # chromium refuses root without it
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def shot(locator, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    locator.scroll_into_view_if_needed()
    locator.page.mouse.move(0, 0)  # no hover highlight in the picture
    locator.screenshot(path=ARTIFACTS / name)
    if os.environ.get("DOCS_IMG") == "1":
        shutil.copy(ARTIFACTS / name, REPO / "docs" / "img" / name)


def open_and_run(page, lab, notebook: str) -> float:
    """Open a notebook, check it opens clean on the project's kernel, run all cells; returns the seconds."""
    url, token = lab
    page.goto(f"{url}/lab/tree/{notebook}?token={token}&reset")
    page.wait_for_selector(".jp-Notebook .jp-Cell")
    # the kernel the notebook names starts without asking which one
    sync_api.expect(page.locator(".jp-Toolbar-kernelName").first).to_have_text("Python (tinystories-lab)",
                                                                                timeout=60_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    page.wait_for_timeout(1000)  # the kernel's language_info arrives after idle: it must not mark the notebook
    assert page.locator(".jp-mod-dirty").count() == 0, f"{notebook} opens marked modified"
    t0 = time.perf_counter()
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
    # done when every code cell has a number in its prompt ([*] while queued or running), or one failed
    # (JupyterLab shows a traceback as stderr, and Run All stops there)
    page.wait_for_function(
        f"""() => {{ const p = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                  return p.every(e => /\\[\\d+\\]/.test(e.textContent)) || {FAILED}.length > 0; }}""",
        timeout=RUN_TIMEOUT_S * 1000, polling=500)
    failed = page.evaluate(f"{FAILED}.map(e => e.innerText)")
    assert not failed, f"{notebook}: a cell failed:\n{failed[0][-3000:]}"
    return time.perf_counter() - t0


def test_notebook_06_widgets_in_a_browser(page, lab):
    seconds = open_and_run(page, lab, "06_interpretability.ipynb")
    print(f"notebook 06 ran in the browser in {seconds:.0f}s")

    # the neuron tables are HTML tables, the activating token highlighted, not broken Markdown
    table = page.locator(".jp-OutputArea-output table", has=page.locator("mark")).first
    assert table.locator("tr").count() > 1 and "**" not in table.inner_text()
    shot(table.locator("xpath=.."), "neuron_contexts.png")

    # sampler: type a beginning, Generate, and the story streams in after it
    sampler = page.locator(".jp-OutputArea-output", has=page.locator(".ts-sampler-output")).last
    beginning = "Tom went to the park with his dog and"
    sampler.locator("textarea").fill(beginning)
    generate = sampler.locator("button", has_text="Generate")
    generate.click()
    out = sampler.locator(".ts-sampler-output")
    page.wait_for_function("([el, n]) => el.innerText.trim().length > n", arg=[out.element_handle(), len(beginning) + 5])
    sync_api.expect(generate).to_be_enabled()  # disabled while the story streams
    assert out.inner_text().strip().startswith(beginning)
    shot(sampler, "sampler.png")

    # attention explorer: click an earlier token, and the view and the shading follow it
    explorer = page.locator(".jp-OutputArea-output", has=page.locator(".ts-attention-view")).last
    view = explorer.locator(".ts-attention-view")
    before, tokens = view.inner_text(), explorer.locator(".ts-attention-tokens button")
    assert "attends most to" in before and tokens.count() > 10
    shades = [tokens.nth(i).evaluate("b => getComputedStyle(b).backgroundColor") for i in range(8)]
    tokens.nth(8).click()
    page.wait_for_function("([el, t]) => el.innerText !== t", arg=[view.element_handle(), before])
    assert view.inner_text().startswith("token 8 ")
    assert [tokens.nth(i).evaluate("b => getComputedStyle(b).backgroundColor") for i in range(8)] != shades
    grey = tokens.nth(9).evaluate("b => getComputedStyle(b).color")
    assert grey == "rgb(187, 187, 187)"  # a later token: it cannot be seen
    # another model: its layers replace the 1-layer model's in the layer list
    model, layer = explorer.locator("select").nth(0), explorer.locator("select").nth(1)
    assert layer.locator("option").count() == 1
    deeper = next(o for o in model.locator("option").all_inner_texts() if o.endswith("-l2"))
    model.select_option(label=deeper)
    sync_api.expect(layer.locator("option")).to_have_count(2)
    explorer.locator("select").nth(2).select_option(label="mean of heads")
    shot(explorer, "attention_explorer.png")


def test_notebook_04_tables_in_a_browser(page, lab):
    seconds = open_and_run(page, lab, "04_grading.ipynb")
    print(f"notebook 04 ran in the browser in {seconds:.0f}s")
    table = page.locator(".jp-OutputArea-output table", has_text="completion").last
    assert table.locator("tr").count() > 3 and "model" in table.locator("th").first.inner_text()
    shot(table.locator("xpath=.."), "completions_table.png")


def test_notebooks_are_left_as_committed():
    """Autosave is off and nothing was saved: the run's outputs never reach notebooks/."""
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        assert '"output_type"' not in nb.read_text(encoding="utf-8"), nb
