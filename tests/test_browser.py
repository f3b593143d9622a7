"""Notebook 00 in a real browser: headless Chromium drives JupyterLab 4, runs every cell, and checks
what a student sees: no error cell, the slice viewer drawn (no "Error displaying widget"), a drag
of its slice slider redrawing the image, and the 3-D viewer's canvas drawing the CT and its labels.

Runs on a copy of the notebook in a temporary folder (JupyterLab's autosave never touches the
repository), with the environment's own kernel and without ``FSEFT_HEADLESS`` (set by conftest.py
for nbval), so the viewers take their interactive path. Needs the distribution's Chromium
(``/usr/bin/chromium``; ``.ci/run`` installs it) and Playwright's Python package, which drives that
browser (``playwright install`` is never needed); skips in one line without them. Screenshots of
each step stay in ``$FSEFT_BROWSER_SHOTS`` (default ``<tmp>/fseft_browser_shots``), also after a failure.
"""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from fseft_lab.course_files import copy_course
from fseft_lab.notebooks import find_notebooks

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no Chromium installed (.ci/run installs the distribution's `chromium`)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed ([dev] extra)")

SHOTS = Path(os.environ.get("FSEFT_BROWSER_SHOTS", Path(tempfile.gettempdir()) / "fseft_browser_shots"))
RUN_ALL_S = 300     # notebook 00 runs in about 1-2 minutes on 2 busy cores
# the closed network refuses the browser's background connections: ask for none
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# JupyterLab settings for the test's own settings folder: every cell stays in the page (no windowing),
# and no news or update pop-ups over the notebook
LAB_SETTINGS = {"@jupyterlab/notebook-extension/tracker.jupyterlab-settings": '{"windowingMode": "none"}',
                "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
                    '{"fetchNews": "false", "checkForUpdates": false}'}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab 4 on 127.0.0.1 serving the student's working copy of the course (``fseft-lab course``,
    so notebook 00's ``../data`` is inside the copy); yields its URL."""
    root = tmp_path_factory.mktemp("course")
    copy_course(root)
    for name, text in LAB_SETTINGS.items():
        (root / "settings" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "settings" / name).write_text(text)
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k != "FSEFT_HEADLESS"}   # the viewers' interactive path
    env.update(JUPYTERLAB_SETTINGS_DIR=str(root / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(root / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(root / "runtime"))
    log = root / "jupyterlab.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False",
             "--ServerApp.allow_root=True",
             f"--ServerApp.root_dir={root / 'notebooks'}", "--LabApp.expose_app_in_browser=True",
             "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            cwd=root / "notebooks", env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start in 60 s; its log:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield url, token
    finally:
        for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(server.pid, sig)     # its own session: the server and the kernels it started
            except ProcessLookupError:
                break
            try:
                server.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A page of headless Chromium (the system's browser, a fresh profile)."""
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def _pixels(png: bytes) -> np.ndarray:
    from io import BytesIO

    from PIL import Image
    return np.asarray(Image.open(BytesIO(png)).convert("RGB")).astype(int)


def _poll(check, timeout_s: float, what: str):
    """``check()`` until it returns something true; fail saying ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} (waited {timeout_s:.0f} s; screenshots in {SHOTS})")
        time.sleep(1)
    return result


def test_notebook_00_runs_in_jupyterlab_and_both_viewers_draw(lab, page):
    url, token = lab
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):
        old.unlink()
    try:
        _check_notebook_00(page, url, token)
    except BaseException:
        page.screenshot(path=SHOTS / "failure.png")
        raise


def _run_all(page, url, token, notebook: str, timeout_s: float) -> float:
    """Open ``notebook`` of the working copy, Run All, wait for the kernel; fail naming every cell that
    did not run or raised, and every widget that could not display. Returns Run All's seconds."""
    page.set_default_timeout(30_000)
    # ?reset: a fresh workspace, or JupyterLab would reopen (and start kernels for) every notebook opened before
    page.goto(f"{url}/lab/tree/{notebook}?reset&token={token}")
    page.wait_for_function("""name => {
        const widget = window.jupyterapp?.shell.currentWidget;
        return widget?.context?.path === name && widget.sessionContext?.session?.kernel?.status === 'idle'; }""",
                           arg=notebook, timeout=120_000)
    start = time.monotonic()
    page.evaluate("""ms => Promise.race([
        jupyterapp.commands.execute('notebook:run-all-cells'),
        new Promise((_, reject) => setTimeout(() => reject(new Error('Run All still running after ' + ms + ' ms')), ms))])""",
                  timeout_s * 1000)
    page.wait_for_function("() => jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'")
    seconds = time.monotonic() - start
    shot = SHOTS / f"{Path(notebook).stem}_after_run_all.png"
    page.screenshot(path=shot)

    problems = page.evaluate("""() => {
        const cells = jupyterapp.shell.currentWidget.content.model.cells, problems = [];
        for (let i = 0; i < cells.length; i++) {
            const cell = cells.get(i);
            if (cell.type !== 'code') continue;
            if (cell.executionCount === null) problems.push(`cell ${i}: not run`);
            for (let j = 0; j < cell.outputs.length; j++) {
                const out = cell.outputs.get(j).toJSON();
                if (out.output_type === 'error') problems.push(`cell ${i}: ${out.ename}: ${out.evalue}`);
            }
        }
        return problems; }""")
    assert not problems, f"{notebook}: cells that failed: {problems}"
    assert page.get_by_text("Error displaying widget").count() == 0, f"{notebook}: a widget failed to display: {shot}"
    print(f"{notebook}, Run All in JupyterLab: {seconds:.0f} s")
    return seconds


def _check_notebook_00(page, url, token):
    _run_all(page, url, token, "00_data.ipynb", RUN_ALL_S)

    # the slice viewer: its image, then a drag of its slice slider
    viewer = page.locator(".widget-hbox").filter(has=page.locator(".widget-label", has_text="slice")).last
    image = viewer.locator(".widget-output img").first
    image.wait_for(state="visible", timeout=60_000)
    viewer.scroll_into_view_if_needed()
    before_src, before = image.get_attribute("src"), image.screenshot(path=SHOTS / "slice_viewer_before.png")
    slider = viewer.locator(".widget-slider").filter(has=page.locator(".widget-label", has_text="slice"))
    readout = slider.locator(".widget-readout")
    before_index = readout.inner_text()
    box = slider.locator(".noUi-handle").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 60, box["y"] + box["height"] / 2, steps=6)
    page.mouse.up()
    _poll(lambda: readout.inner_text() != before_index, 10, f"the slice slider did not move from {before_index} when dragged")
    _poll(lambda: image.get_attribute("src") not in (None, before_src), 60,
          f"the slice viewer's image stayed the same after its slider moved from slice {before_index} to {readout.inner_text()}")
    page.wait_for_timeout(1500)   # the last redraw of the drag
    after = image.screenshot(path=SHOTS / "slice_viewer_after.png")
    changed = (np.abs(_pixels(before) - _pixels(after)).sum(axis=-1) > 30).mean()
    assert changed > 0.01, f"moving the slice slider changed {changed:.1%} of the image's pixels"

    # the 3-D viewer: a WebGL canvas that draws the CT (greys) and the labels (colours)
    canvas = page.locator(".jp-OutputArea-output canvas").last
    canvas.wait_for(state="visible", timeout=60_000)
    canvas.scroll_into_view_if_needed()

    def drawn():
        rgb = _pixels(canvas.screenshot(path=SHOTS / "viewer_3d.png"))
        lit = (rgb.sum(axis=-1) > 60).mean()                         # not the black background
        coloured = ((rgb.max(axis=-1) - rgb.min(axis=-1)) > 60).mean()   # saturated: the label overlays
        return lit > 0.05 and coloured > 0.002 and (lit, coloured)

    lit, coloured = _poll(drawn, 60, "the 3-D viewer's canvas drew no CT or no labels")
    viewer_3d = page.locator(".widget-hbox").filter(has=page.locator(".fseft-legend")).last
    viewer_3d.screenshot(path=SHOTS / "viewer_3d_with_legend.png")
    names = viewer_3d.locator(".fseft-legend").inner_text()
    assert all(name in names for name in ("liver", "spleen", "aorta")), f"the 3-D viewer's legend reads {names!r}"
    print(f"3-D canvas: {lit:.0%} of its pixels lit, {coloured:.1%} coloured; screenshots in {SHOTS}")


@pytest.mark.skipif(not os.environ.get("FSEFT_BROWSER_ALL"),
                    reason="every notebook in the browser takes about 20 minutes: FSEFT_BROWSER_ALL=1 runs it")
@pytest.mark.parametrize("notebook", [p.name for p in find_notebooks()][1:])
def test_every_notebook_runs_all_in_jupyterlab(lab, page, notebook):
    """A student's Run All, notebook by notebook, in the working copy (00 is the test above):
    ``FSEFT_BROWSER_ALL=1 python -m pytest -m browser -s`` prints each one's seconds."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        _run_all(page, url=lab[0], token=lab[1], notebook=notebook, timeout_s=900)
    except BaseException:
        page.screenshot(path=SHOTS / f"{Path(notebook).stem}_failure.png")
        raise
    finally:   # its kernel holds the notebook's models and volumes: free them for the next one
        _shut_down_kernels(*lab)


def _shut_down_kernels(url: str, token: str) -> None:
    """End every session of the server, and so its kernel, through the server's REST API."""
    headers = {"Authorization": f"token {token}"}

    def call(path: str, method: str = "GET"):
        request = urllib.request.Request(f"{url}/api/{path}", headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read() or b"null")

    for session in call("sessions"):
        call(f"sessions/{session['id']}", "DELETE")
    left = call("kernels")
    assert not left, f"kernels still running after their sessions ended: {[k['id'] for k in left]}"
