"""What a researcher sees (issue 13): a real smoke sweep opened with `raydistill ui` in headless
Chromium, and the `raydistill` command line around it (tables, sweep --dry-run, ui, --help).

Chromium is driven through chromedriver's WebDriver HTTP API with urllib (no Selenium): MLflow shows
an HTML artifact in a blob: iframe, which `chromium --dump-dom --virtual-time-budget` never renders.
Every wait polls a condition up to a deadline, so a loaded machine makes the tests slower, not flaky.
Set RAYDISTILL_SCREENSHOTS=DIR to keep the screenshots.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import make_mnist_like
from raydistill.cli import main
from sweeps_util import SMOKE_CELLS, runs, sweep_command

RAYDISTILL = Path(sys.executable).with_name("raydistill")  # the installed entry point
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1600,1000"]
KEY_METRICS = ("accuracy", "time_total_s", "sensitivity", "specificity")
GENAI_NAV = ("Judges", "Evaluation runs", "Sessions", "Prompts")  # side-bar entries of MLflow's GenAI view
WAIT = 240.0  # seconds for anything the loaded machine has to start or render


def until(probe: Callable[[], object], what: str, timeout: float = WAIT) -> object:
    """Poll `probe` until it returns something truthy; fail naming `what` and its last answer."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what} within {timeout:.0f} s; last seen: {str(last)[:2000]}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def health(base: str) -> int | None:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
            return response.status
    except (urllib.error.URLError, OSError):
        return None


# ---- a real smoke sweep, and `raydistill ui` on it ----------------------------------------------

@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Iterator[tuple[Path, subprocess.Popen]]:
    """The smoke sweep, started in the background; its results/ is in the folder returned."""
    work = tmp_path_factory.mktemp("work")
    data = make_mnist_like(tmp_path_factory.mktemp("data"), folder="FashionMNIST")
    with open(work / "sweep.log", "w") as log:
        process = subprocess.Popen(sweep_command(data, work / "results"), stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "RAY_AUTH_MODE": "disabled"}, start_new_session=True)
    try:
        yield work, process
    finally:
        kill_group(process.pid)
        process.wait()


@pytest.fixture(scope="module")
def smoke(sweep) -> Path:
    """The folder whose results/ holds the finished smoke sweep (store, tables, comparison artifacts)."""
    work, process = sweep
    assert process.wait(timeout=900) == 0, (work / "sweep.log").read_text()[-3000:]
    return work


@dataclass
class UI:
    process: subprocess.Popen
    base: str
    links: dict[str, str]  # experiment name -> the link `raydistill ui` prints
    servers: list[int]  # its MLflow server's process group(s)

    def stop(self) -> None:
        """SIGTERM, as `kill` would; SIGKILL whatever is left after a minute."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        finally:
            self.process.kill()
            self.process.wait()
            for pgid in self.servers:
                kill_group(pgid)
            self.servers = []


@pytest.fixture(scope="module")
def ui(sweep) -> Iterator[UI]:
    """`raydistill ui` started in the folder holding results/ (no arguments) once the sweep has its
    run, as a user watching it live would."""
    work, _ = sweep
    until(lambda: (work / "results" / "mlflow.db").is_file() and runs(work / "results", "sweep"),
          "the sweep made no MLflow run")
    port, log = free_port(), work / "ui.log"
    with open(log, "w") as out:
        process = subprocess.Popen([str(RAYDISTILL), "ui", "--port", str(port)], cwd=work, stdout=out,
                                   stderr=subprocess.STDOUT, text=True)
    handle = UI(process, f"http://127.0.0.1:{port}", {}, [])
    try:
        def printed() -> dict[str, str]:
            assert process.poll() is None, f"raydistill ui exited with {process.returncode}: {log.read_text()}"
            handle.servers = children(process.pid)  # start_server gives the server its own session
            return dict(re.findall(r"^  (\S+): (http://\S+)$", log.read_text(), flags=re.M))

        handle.links = until(printed, "raydistill ui printed no link per sweep")
        yield handle
    finally:
        handle.stop()


# ---- headless Chromium through chromedriver ---------------------------------------------------

class Browser:
    """One headless Chromium session through chromedriver's W3C WebDriver HTTP API."""

    def __init__(self, profile: Path, shots: Path):
        self.shots = shots
        port = free_port()
        self.driver = subprocess.Popen([CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
        self.base, self.session = f"http://127.0.0.1:{port}", ""
        until(lambda: self._ready(), "chromedriver did not answer", timeout=60)
        options = {"binary": CHROMIUM, "args": [*CHROME_FLAGS, f"--user-data-dir={profile}"]}
        self.session = self.call("POST", "/session", {"capabilities": {"alwaysMatch": {
            "goog:chromeOptions": options}}})["sessionId"]

    def _ready(self) -> bool:
        try:
            return bool(self.call("GET", "/status")["ready"])
        except OSError:
            return False

    def call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=180) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as err:
            raise AssertionError(f"WebDriver {method} {path}: {err.read()[:500]!r}") from None

    def command(self, path: str, body: dict | None = None, method: str = "POST"):
        return self.call(method, f"/session/{self.session}{path}", body)

    def open(self, url: str) -> None:
        self.command("/url", {"url": url})

    def js(self, script: str, *args: object):
        return self.command("/execute/sync", {"script": script, "args": list(args)})

    def enter_frame(self, css: str) -> None:
        element = self.command("/element", {"using": "css selector", "value": css})
        self.command("/frame", {"id": element})

    def leave_frames(self) -> None:
        self.command("/frame", {"id": None})

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        path.write_bytes(base64.b64decode(self.command("/screenshot", method="GET")))
        return path

    def close(self) -> None:
        try:
            if self.session:
                self.command("", method="DELETE")
        finally:
            self.driver.terminate()
            try:
                self.driver.wait(timeout=20)
            finally:
                kill_group(self.driver.pid)  # any Chromium left behind
                self.driver.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[Browser]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("no Chromium with chromedriver (Debian: apt-get install chromium chromium-driver)")
    shots = Path(os.environ.get("RAYDISTILL_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    session = Browser(tmp_path_factory.mktemp("chromium-profile"), shots)
    try:
        yield session
    finally:
        session.close()


NAME = "attributes.`Run Name`"  # the runs table's column id of run names
RUNS_TABLE = """
const NAME = arguments[0], rows = {};
for (const row of document.querySelectorAll('.ag-row')) {
  const cells = rows[row.getAttribute('row-index')] ??= {};
  for (const cell of row.querySelectorAll('[col-id]')) {
    const id = cell.getAttribute('col-id'), link = cell.querySelector('a');
    cells[id] = (link || cell).innerText.trim();
    if (id === NAME && link) {  // the name's full text extent lies inside its cell
      const text = document.createRange();
      text.selectNodeContents(link);
      cells.cut = text.getBoundingClientRect().right > cell.getBoundingClientRect().right + 1;
    }
  }
}
const grid = document.querySelector('.ag-header-viewport')?.getBoundingClientRect();
const headers = {}, begun = {};  // columns wholly on the first screen; columns that begin on it
for (const h of document.querySelectorAll('.ag-header-cell[col-id]')) {
  const r = h.getBoundingClientRect(), id = h.getAttribute('col-id');
  headers[id] = grid && r.left >= grid.left - 1 && r.right <= grid.right + 1 && r.bottom <= innerHeight;
  begun[id] = grid && r.left >= grid.left - 1 && r.left + 40 <= grid.right && r.bottom <= innerHeight;
}
return {rows: Object.values(rows), headers, begun, nav: document.querySelector('nav')?.innerText ?? ''};
"""
DATASET = "attributes.`Dataset`"  # the runs table's column of a run's dataset inputs (the first one shown)


def test_runs_page_shows_every_cell_by_name_with_its_key_metrics_in_the_classic_view(browser, ui, smoke):
    results = smoke / "results"
    cells = {r.info.run_name: r.data.metrics for r in runs(results, "cell")}
    scored = {r.info.run_name: r.inputs.dataset_inputs[0].dataset for r in runs(results, "cell")}  # logged first
    assert set(cells) == SMOKE_CELLS
    browser.open(ui.links["smoke"])

    def table() -> dict | None:
        page = browser.js(RUNS_TABLE, NAME)
        named = {row.get(NAME): row for row in page["rows"]}
        shown = all(named.get(name, {}).get("metrics.`accuracy`", "-") != "-" for name in cells)
        return {**page, "named": named} if shown else None

    page = until(table, "the runs list did not show every cell with its accuracy")
    shot = browser.screenshot("runs")
    for name, metrics in cells.items():
        row = page["named"][name]
        assert not row["cut"], f"{name} is cut ({shot})"
        for metric in KEY_METRICS:
            assert float(row[f"metrics.`{metric}`"]) == pytest.approx(metrics[metric], abs=1e-9), (name, metric)
        dataset = scored[name]  # the input the metrics were computed on, first in the Dataset column
        assert dataset.name == "fashion-mnist/test[40]", (name, dataset.name)
        assert row[DATASET].startswith(f"{dataset.name} ({dataset.digest})"), (name, row[DATASET], shot)
    assert all(page["headers"].get(f"metrics.`{m}`") for m in KEY_METRICS), (page["headers"], shot)
    assert page["begun"].get(DATASET), (page["begun"], shot)
    assert "Model registry" in page["nav"] and not any(item in page["nav"] for item in GENAI_NAV), (page["nav"], shot)


def test_every_cell_run_records_the_data_its_metrics_were_computed_on(smoke):
    """Its training split, test split and the set its student trained on, as MLflow inputs whose
    digests are the data's: the same test split in every cell, the training split for `full`."""
    found = {}
    for run in runs(smoke / "results", "cell"):
        contexts = [{t.key: t.value for t in item.tags}["mlflow.data.context"] for item in run.inputs.dataset_inputs]
        found[run.info.run_name] = {c: item.dataset for c, item in zip(contexts, run.inputs.dataset_inputs)}
        assert run.data.tags["raydistill.scored_on"] == "test"
    assert set(found) == SMOKE_CELLS
    assert all(set(inputs) == {"training", "test", "distilled"} for inputs in found.values())
    assert len({inputs["test"].digest for inputs in found.values()}) == 1
    assert len({inputs["training"].digest for inputs in found.values()}) == 1
    full = found["full-e3"]
    assert (full["distilled"].name, full["distilled"].digest) == ("fashion-mnist/full[120]", full["training"].digest)
    ipc10 = found["kmeans-grad-l1-ipc10-e3"]["distilled"]
    assert ipc10.name == "fashion-mnist/kmeans[100]" and json.loads(ipc10.profile)["classes"] == 10


REPORT = """
const titles = [...document.querySelectorAll('h2')].map(h => h.innerText.trim());
const heading = [...document.querySelectorAll('h2')].find(h => h.innerText.startsWith('Table 1:'));
let block = heading;
while (block && !block.querySelector?.('table')) block = block.nextElementSibling;
const rows = block ? [...block.querySelectorAll('tr')].map(tr => [...tr.children].map(c => c.innerText.trim())) : [];
return {titles, rows};
"""


def test_sweep_runs_html_report_renders_its_tables_inside_mlflow(browser, ui, smoke):
    results = smoke / "results"
    (sweep,) = runs(results, "sweep")
    experiment_id = sweep.info.experiment_id
    browser.open(f"{ui.base}/#/experiments/{experiment_id}/runs/{sweep.info.run_id}/artifacts/comparison/"
                 "report.html?workflowType=machine_learning")

    def report() -> dict | None:
        browser.leave_frames()
        if not browser.js("return !!document.querySelector('iframe.mlflow-html-iframe')"):
            return None
        browser.enter_frame("iframe.mlflow-html-iframe")
        page = browser.js(REPORT)
        return page if page["rows"] else None

    page = until(report, "MLflow's artifact view did not render report.html's Table 1")
    browser.leave_frames()
    shot = browser.screenshot("report")
    for n in range(1, 6):
        assert any(title.startswith(f"Table {n}:") for title in page["titles"]), (n, page["titles"], shot)
    (fashion,) = [row for row in page["rows"] if row[:2] == ["fashion-mnist", "baseline"]]
    accuracy = {r.info.run_name: r.data.metrics["accuracy"] for r in runs(results, "cell")}
    for name in ("kmeans-grad-l1-ipc10-e1", "kmeans-grad-l1-ipc10-e3"):  # Table 1 is ipc 10; ours, then n = 1
        ours = f"{100 * accuracy[name]:.2f}"
        assert any(fashion[i : i + 2] == [ours, "1"] for i in range(len(fashion))), (name, ours, fashion)


# ---- the command line ---------------------------------------------------------------------------

def test_tables_without_arguments_finds_the_sweeps_own_store(smoke):
    tables = smoke / "results" / "tables"
    shutil.rmtree(tables)
    proc = subprocess.run([str(RAYDISTILL), "tables"], cwd=smoke, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"report.html", "table1.md", "all_tables.md"} <= {p.name for p in (tables / "smoke").iterdir()}
    assert "results/tables/smoke/report.html" in proc.stdout
    assert not (smoke / "mlflow.db").exists() and not (smoke / "mlruns").exists()  # nothing made in the cwd


def test_sweep_dry_run_prints_names_and_keys_and_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for args, names in ((["--smoke"], SMOKE_CELLS), ([], None)):
        assert main(["sweep", "paper-grid", "--dry-run", *args]) == 0
        *lines, total = capsys.readouterr().out.splitlines()
        cells = dict(re.match(r"(\S+) +key ([0-9a-f]{16}) ", line).groups() for line in lines)
        assert len(cells) == len(set(cells.values())) == len(lines) == int(total.split()[0])
        assert names is None or set(cells) == names
    assert len(cells) == 90 and "cifar10-lenet-ipc50-e600" in cells
    assert list(tmp_path.iterdir()) == []


def test_ui_refuses_a_missing_store_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["ui"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("raydistill: error: no MLflow store at ")
    assert list(tmp_path.iterdir()) == []


def test_raydistill_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0
    assert all(f"    {command} " in out for command in ("run", "sweep", "tables", "audit", "ui", "server"))


@pytest.mark.parametrize("args, shown", [
    (["run"], ["--dataset", "--method", "--protocol", "--out"]),
    (["sweep"], ["paper-grid", "ablation", "forensics"]),
    (["sweep", "paper-grid"], ["--smoke", "--dry-run", "--results", "--seeds"]),
    (["audit"], ["--out"]),
    (["ui"], ["--results", "--port", "127.0.0.1"]),
    (["server"], ["--host", "--port", "--root"]),
])
def test_subcommand_help(args, shown, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*args, "--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and out.startswith(f"usage: raydistill {' '.join(args)}")
    assert all(option in out for option in shown), out


def test_tables_help(capsys):
    assert main(["tables", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: raydistill tables") and all(o in out for o in ("--experiment", "--results", "--out"))


def test_ui_answers_on_loopback_and_sigterm_stops_its_server(ui):
    """Last in the file: it stops the module's `raydistill ui`."""
    assert health(ui.base) == 200
    servers = ui.servers
    assert servers, "no MLflow server process under raydistill ui"
    ui.process.send_signal(signal.SIGTERM)
    assert ui.process.wait(timeout=60) == 0
    assert health(ui.base) is None
    for pgid in servers:
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)  # the server stopped with it, workers included
