"""Issue 12: what `ray up cluster.yaml` promises, shown on one machine. A Ray cluster of Ray's own
test kind (a head without CPUs, two one-CPU worker nodes with their own custom resources) and the
MLflow server of raydistill.tracking_server over HTTP; each sweep is the command line
(`sweeps/paper_grid.py --smoke --address ... --tracking-uri http://...`) in its own process, on
tiny data.

Tune gives no way to pin trials to nodes, so the tests make the moments they need with the
tracking server instead: a proxy between the sweep and the server keeps one answer back (a trial
that has ended its run then stays busy on its node), loses answers, or the server is paused or
restarted; nodes are removed with Ray's own call. Every wait polls with a deadline; clusters,
servers and drivers are always stopped. Bad input (no cluster, a server that is not MLflow, one that refuses uploads)
is one line from the CLI before anything starts.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

import pytest
from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient
from ray._private.node import Node
from ray.cluster_utils import Cluster

from raydistill import tracking
from raydistill.tracking_server import TrackingServer, start_server

from conftest import make_mnist_like
from sweeps_util import REPO, SMOKE_CELLS

T = TypeVar("T")
SWEEP_SECONDS = 600.0  # a deadline, not an expectation: a sweep takes 2-4 minutes on 2 loaded cores
MB = 1024 * 1024
# MLflow's client retries its idempotent requests with exponential backoff, and raydistill its
# creates (raydistill.tracking.retrying) with the same settings; these ride out a server restart of
# up to a minute (retries after 0, 2, 4, 8, 16 and 32 s) and bound a hung request, where the
# defaults (7 retries, factor 2, 120 s timeout) would leave a trial waiting about 4 minutes for a
# server that is gone for good before Tune may retry it elsewhere.
MLFLOW_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "6", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- the cluster, the server, the data ----------------------------------------------------------

class Nodes:
    """Ray's test cluster: a head without CPUs (the drivers connect there) and the workers `a`
    and `b`, one CPU each plus a custom resource of their own name."""

    def __init__(self) -> None:
        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 100 * MB})
        self.workers: dict[str, Node] = {}
        self.ensure()

    def ensure(self) -> dict[str, Node]:
        """Both workers alive (a test may have removed one)."""
        for name in ("a", "b"):
            if name not in self.workers:
                self.workers[name] = self.cluster.add_node(num_cpus=1, resources={name: 1},
                                                           object_store_memory=100 * MB)
        self.cluster.wait_for_nodes()
        return self.workers

    def name(self, node_id: str) -> str:
        return next((n for n, node in self.workers.items() if node.node_id == node_id), "gone")

    def remove(self, name: str) -> None:
        self.cluster.remove_node(self.workers.pop(name))


@pytest.fixture(scope="module")
def nodes() -> Iterator[Nodes]:
    """The cluster, under a Ray temp folder of its own: Ray's test cluster records its address as
    this machine's latest cluster, and a plain ray.init() of any other sweep here would join it."""
    ray_tmp = tempfile.mkdtemp(prefix="rdmn", dir="/tmp")  # short: Ray's socket paths live under it
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_TMPDIR", ray_tmp)
        cluster = None
        try:
            cluster = Nodes()
            yield cluster
        finally:
            if cluster is not None:
                cluster.cluster.shutdown()
            shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture
def workers(nodes: Nodes) -> dict[str, Node]:
    return nodes.ensure()


class Server:
    """The tracking server on one root and port, stopped or paused by a test and started again."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.current: TrackingServer | None = None
        self.start()

    def start(self) -> None:
        self.current = start_server(self.root, port=self.port, workers=1, timeout=180)

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()
            self.current = None

    @contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP: requests wait, so no run can end meanwhile."""
        os.killpg(self.current.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(self.current.process.pid, signal.SIGCONT)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("mlflow"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_mnist_like(tmp_path_factory.mktemp("data"), folder="FashionMNIST")


# ---- HTTP in front of the server -----------------------------------------------------------------

@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


class Proxy(BaseHTTPRequestHandler):
    """A reverse proxy to the test's MLflow server (`upstream`); while that server is down it
    answers 502, as a load balancer does."""

    upstream = ""

    def do_GET(self) -> None:
        self.forward(self.rfile.read(int(self.headers.get("Content-Length", 0))))

    do_POST = do_PUT = do_DELETE = do_GET

    def forward(self, body: bytes) -> None:
        self.answer(*self.relay(body))

    def relay(self, body: bytes) -> tuple[int, bytes]:
        request = urllib.request.Request(self.upstream + self.path, method=self.command,
                                         data=body if self.command in ("POST", "PUT") else None,
                                         headers={"Content-Type": self.headers.get("Content-Type", "application/json")})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except (OSError, http.client.HTTPException):
            return 502, b"<html><body>502 Bad Gateway</body></html>"

    def answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def proxy(upstream: str, base: type[Proxy] = Proxy, **attributes) -> type[Proxy]:
    return type(base.__name__, (base,), {"upstream": upstream, **attributes})


class LosesFirstCreateAnswers(Proxy):
    """Forwards the first create of each run and drops its answer (the connection closes), as when
    a server restarts between committing and answering: the client's retry creates it again."""

    lost: set[str]

    def forward(self, body: bytes) -> None:
        name = json.loads(body).get("run_name") if self.path.endswith("/runs/create") else None
        status, answer = self.relay(body)
        if status == 200 and name not in (None, "artifact-probe", *self.lost):  # the probe is not retried
            self.lost.add(name)
            self.close_connection = True
            return
        self.answer(status, answer)


class HoldsFirstFinish(Proxy):
    """Commits the first update that ends a run of `role` FINISHED, then keeps its answer back
    until `release` is set and drops it: that trial has ended its run but is stuck until then."""

    role: str
    held: dict[str, str]
    release: threading.Event

    def forward(self, body: bytes) -> None:
        status, answer = self.relay(body)
        update = json.loads(body) if self.path.endswith("/runs/update") else {}
        if (status == 200 and update.get("status") == "FINISHED" and "run_id" not in self.held
                and MlflowClient(self.upstream).get_run(update["run_id"]).data.tags.get(tracking.ROLE) == self.role
                and self.held.setdefault("run_id", update["run_id"]) == update["run_id"]):
            self.release.wait(SWEEP_SECONDS)
            self.close_connection = True
            return
        self.answer(status, answer)


class RefusesUploads(Proxy):
    """Answers every artifact upload with 413, as nginx does with a small client_max_body_size."""

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.answer(413, b"<html><body>413 Request Entity Too Large</body></html>")


# ---- a sweep and what it left in MLflow ---------------------------------------------------------

class Sweep:
    """`sweeps/paper_grid.py --smoke` on the cluster and the server, in its own process group."""

    def __init__(self, name: str, data: Path, results: Path, address: str, uri: str, tracking_uri: str,
                 *extra: str) -> None:
        """`uri`: the server, read by the test; `tracking_uri`: where the sweep sends everything."""
        self.name, self.results, self.uri = name, results, uri
        self.log = results.parent / f"{name}.log"
        cmd = [sys.executable, str(REPO / "sweeps" / "paper_grid.py"), "--smoke", "--name", name,
               "--data-root", str(data), "--results", str(results), "--max-concurrent", "2",
               "--address", address, "--tracking-uri", tracking_uri, *extra]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            env={**os.environ, **MLFLOW_RETRIES})
        self.started = time.monotonic()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, what: str, check: Callable[[], T | None], timeout: float = SWEEP_SECONDS) -> T:
        """Poll `check` until it returns something; fail if the sweep ends first or at the deadline."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            assert self.process.poll() is None, f"the sweep ended before {what}:\n{self.output()[-4000:]}"
            time.sleep(0.25)
        raise AssertionError(f"no {what} within {timeout:.0f} s:\n{self.output()[-4000:]}")

    def finish(self) -> str:
        try:
            code = self.process.wait(max(1.0, SWEEP_SECONDS - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the sweep did not end in time:\n{self.output()[-4000:]}") from None
        assert code == 0, self.output()[-4000:]
        return self.output()

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def runs(self, role: str, deleted: bool = False) -> list[Run]:
        """Runs of one role (active only unless `deleted`), oldest first, read over HTTP."""
        client = MlflowClient(self.uri)
        experiment = client.get_experiment_by_name(self.name)
        if experiment is None:
            return []
        found = client.search_runs([experiment.experiment_id], f"tags.`{tracking.ROLE}` = '{role}'",
                                   run_view_type=ViewType.ALL if deleted else ViewType.ACTIVE_ONLY, max_results=1000)
        return sorted(found, key=lambda r: r.info.start_time)

    def trial_contexts(self) -> list[dict]:
        """The `ctx` every Tune trial was given, from Tune's experiment state on the driver's disk."""
        (state,) = (self.results / "ray_results").glob("*/experiment_state-*.json")
        return [json.loads(trial)["config"]["ctx"] for trial, _ in json.loads(state.read_text())["trial_data"]]


@pytest.fixture
def sweeps(request, data, nodes, server, tmp_path) -> Iterator[Callable[..., Sweep]]:
    started: list[Sweep] = []

    def start(*extra: str, tracking_uri: str | None = None) -> Sweep:
        name = request.node.name.removeprefix("test_")[:40].replace("_", "-")
        started.append(Sweep(name, data, tmp_path / "results", nodes.cluster.address, server.uri,
                             tracking_uri or server.uri, *extra))
        return started[-1]

    try:
        yield start
    finally:
        for sweep in started:
            sweep.kill()


def mid_work(run: Run) -> bool:
    """A trial's cell run (its params are logged: not a twin left by a lost answer) that still has
    to compute, log its figures, upload its artifacts and end."""
    return run.info.status == "RUNNING" and bool(run.data.params) and "accuracy" not in run.data.metrics


def check_finished_cells(sweep: Sweep, expected: set[str] = SMOKE_CELLS, teachers: int = 1) -> dict[str, Run]:
    """Exactly one active run per cell, FINISHED, with its artifacts readable through the server
    (result.json agrees with the run's metric) and every epoch's loss once; the teachers and the
    sweep run FINISHED, once each."""
    cells = {r.info.run_name: r for r in sweep.runs("cell")}
    assert sorted(cells) == sorted(expected) and len(sweep.runs("cell")) == len(expected)
    assert {r.info.status for r in cells.values()} == {"FINISHED"}
    assert [t.info.status for t in sweep.runs("teacher")] == ["FINISHED"] * teachers
    assert [s.info.status for s in sweep.runs("sweep")] == ["FINISHED"]
    client = MlflowClient(sweep.uri)
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in cells.items():
            assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
            result = json.loads(Path(client.download_artifacts(run.info.run_id, "result.json", tmp)).read_text())
            assert result["metrics"]["accuracy"] == pytest.approx(run.data.metrics["accuracy"]), name
            files = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert {"confusion.png", "roc.png"} <= files, name
            assert "distilled.pt" in files or run.data.params["method"] == "full", name
            epochs = int(run.data.params["student_epochs"])
            history = client.get_metric_history(run.info.run_id, "student_train_loss")
            assert sorted(m.step for m in history) == list(range(1, epochs + 1)), name
    return cells


# ---- the multi-node behaviours ------------------------------------------------------------

def test_smoke_grid_over_http_on_two_nodes_with_a_teacher_from_another_node(sweeps, workers, nodes, server):
    """The teacher's trial is kept busy at its very end (a proxy holds the answer to its FINISHED
    update) until a cell that needs it has started on the other worker: with the teacher's node
    busy, the cells released by its milestones can only go there."""
    held: dict[str, str] = {}
    release = threading.Event()
    try:
        with http_server(proxy(server.uri, HoldsFirstFinish, role="teacher", held=held, release=release)) as uri:
            sweep = sweeps(tracking_uri=uri)
            teacher_id = sweep.wait_for("teacher run FINISHED with its answer held", lambda: held.get("run_id"))
            trained_on = MlflowClient(server.uri).get_run(teacher_id).data.tags[tracking.NODE]
            sweep.wait_for("cell on the other worker", lambda: any(
                c.data.tags.get(tracking.NODE) not in (None, trained_on) and c.info.run_name != "full-e3"
                for c in sweep.runs("cell")))
            release.set()
            output = sweep.finish()
    finally:
        release.set()
    cells = check_finished_cells(sweep)
    (teacher,) = sweep.runs("teacher")
    assert teacher.info.run_id == teacher_id
    where = {name: nodes.name(run.data.tags[tracking.NODE]) for name, run in cells.items()}
    assert set(where.values()) == {"a", "b"}, where  # both workers ran cells, no other node did
    for name, run in cells.items():
        if name != "full-e3":
            assert run.data.tags[tracking.TEACHER_RUN] == teacher_id, name
    trained = nodes.name(trained_on)
    assert any(where[n] != trained for n in cells if n != "full-e3"), where  # trained on one, used on the other
    # No trial was given the store itself: every trial's ctx names the HTTP URI, and no sqlite file
    # appeared beside the driver (the server's own store is under its root).
    assert {ctx["tracking_uri"] for ctx in sweep.trial_contexts()} == {uri}
    assert not list(sweep.results.rglob("*.db")) and (server.root / "mlflow.db").is_file()
    assert (sweep.results / "tables" / sweep.name / "table1.md").is_file()  # tables read back over HTTP
    assert "5/5 cells finished (5 in this run, 0 earlier)" in output
    print(f"teacher on {trained}; cells: {where}")


def test_a_worker_removed_mid_sweep_has_its_trials_retried_on_the_other(sweeps, workers, nodes, server):
    """Once a cell is FINISHED, the node of a cell that is still mid-work goes (the server is paused
    meanwhile, so that cell cannot end first); Tune retries it on the other worker."""
    sweep = sweeps("--no-tables", "--max-failures", "2")

    def victim() -> tuple[Run, str, dict[str, Run]] | None:
        """A cell mid-work on a worker, preferably one that also ran a FINISHED cell, once one is."""
        cells = sweep.runs("cell")
        finished = {r.info.run_id: r for r in cells if r.info.status == "FINISHED"}
        hosts = {nodes.name(r.data.tags[tracking.NODE]) for r in finished.values()}
        candidates = sorted(((nodes.name(r.data.tags[tracking.NODE]), r) for r in cells if mid_work(r)),
                            key=lambda found: found[0] not in hosts)
        if not finished or not candidates:
            return None
        name, run = candidates[0]
        return run, name, finished

    run, lost, finished = sweep.wait_for("FINISHED cell and a cell mid-work", victim)
    with server.paused():
        nodes.remove(lost)
    output = sweep.finish()

    cells = check_finished_cells(sweep)
    assert f"retry   {run.info.run_name}" in output  # Tune saw the trial die with its node and ran it again
    attempts = {r.info.run_id: r for r in sweep.runs("cell", deleted=True)}
    assert attempts[run.info.run_id].info.lifecycle_stage == "deleted"  # the lost attempt, soft-deleted
    assert nodes.name(cells[run.info.run_name].data.tags[tracking.NODE]) not in (lost, "gone")
    kept = {r.info.run_id for r in cells.values()}
    assert set(finished) <= kept, "a run FINISHED before the node went was lost or run again"
    print(f"worker {lost} removed while {run.info.run_name} was mid-work there, after "
          f"{', '.join(r.info.run_name for r in finished.values())} FINISHED; "
          f"{output.count('retry   ')} trial retries; {len(attempts)} cell runs in all, {len(cells)} active")


def test_a_node_lost_after_a_cell_finished_does_not_run_it_again(sweeps, workers, nodes, server):
    """A cell's run is FINISHED in MLflow but its trial dies with its node before Tune hears of it
    (a proxy keeps the answer to the FINISHED update back until the node is gone). Tune retries the
    trial on the other worker, which finds the FINISHED run and reports it instead of running the
    cell again. The grid is the smoke grid's two full-data cells (no teacher)."""
    held: dict[str, str] = {}
    release = threading.Event()
    try:
        with http_server(proxy(server.uri, HoldsFirstFinish, role="cell", held=held, release=release)) as uri:
            sweep = sweeps("--no-tables", "--max-failures", "2", "--set", "method=full", tracking_uri=uri)
            run_id = sweep.wait_for("cell run FINISHED with its answer held", lambda: held.get("run_id"))
            run = MlflowClient(server.uri).get_run(run_id)
            lost = nodes.name(run.data.tags[tracking.NODE])
            nodes.remove(lost)
            release.set()
            output = sweep.finish()
    finally:
        release.set()
    check_finished_cells(sweep, {"e1", "e3"}, teachers=0)
    assert f"retry   {run.info.run_name}" in output
    assert [r.info.run_id for r in sweep.runs("cell", deleted=True) if r.info.run_name == run.info.run_name] == [run_id]
    print(f"worker {lost} removed after {run.info.run_name}'s run was FINISHED, before its trial could report; "
          f"{output.count('retry   ')} trial retries; {run.info.run_name} kept its one run")


def test_tracking_server_restarted_mid_sweep_loses_and_duplicates_nothing(sweeps, workers, server):
    """While a cell is mid-work the server stops (SIGTERM), stays down a few seconds and starts
    again on the same store and port. The sweep reaches it through a proxy that answers 502 while
    it is down and loses the answer to the first create of every run (so each is created twice)."""
    lost: set[str] = set()
    with http_server(proxy(server.uri, LosesFirstCreateAnswers, lost=lost)) as uri:
        sweep = sweeps("--no-tables", "--max-failures", "2", tracking_uri=uri)
        run = sweep.wait_for("cell mid-work", lambda: next((r for r in sweep.runs("cell") if mid_work(r)), None))
        server.stop()
        down = time.monotonic()
        time.sleep(5)  # the outage itself, not a wait for anything
        server.start()
        outage = time.monotonic() - down
        output = sweep.finish()
    check_finished_cells(sweep)
    (teacher,) = sweep.runs("teacher")
    assert lost >= set(SMOKE_CELLS) | {sweep.name, teacher.info.run_name}  # every run was created twice
    twins = [r for role in ("cell", "teacher", "sweep") for r in sweep.runs(role, deleted=True)
             if r.info.lifecycle_stage == "deleted"]
    assert len(twins) >= len(lost)  # each first copy was soft-deleted, none is left to count twice
    retried = f"retry   {run.info.run_name}" in output
    print(f"server down {outage:.1f} s while {run.info.run_name} was mid-work; "
          f"{'Tune retried it' if retried else 'its MLflow client rode the outage out'}; "
          f"{output.count('retry   ')} trial retries")


# ---- bad input: one line before anything starts --------------------------------------------------

def bad_sweep(tmp_path: Path, data: Path, *args: str) -> str:
    """The smoke sweep's command line with bad `args`: exit 2, one line, nothing created."""
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(REPO / "sweeps" / "paper_grid.py"), "--smoke", "--data-root",
                           str(data), "--results", str(results), *args],
                          capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("raydistill: error: "), proc.stderr
    assert not results.exists()  # no store, no Tune folder, no Ray session of ours
    return lines[0]


def test_address_of_no_cluster(tmp_path, data):
    line = bad_sweep(tmp_path, data, "--address", f"127.0.0.1:{free_port()}")
    assert "no Ray cluster answers at 127.0.0.1:" in line


def test_address_where_something_else_listens(tmp_path, data, server):
    line = bad_sweep(tmp_path, data, "--address", server.uri.removeprefix("http://"))  # MLflow, not Ray
    assert "something else listens there" in line


def test_tracking_server_that_is_not_mlflow(tmp_path, data):
    class Site(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html><body>Grafana</body></html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    with http_server(Site) as uri:
        line = bad_sweep(tmp_path, data, "--tracking-uri", uri)
    assert f"{uri} answers HTTP but is not an MLflow tracking server" in line


def test_tracking_server_that_refuses_artifact_uploads(tmp_path, data, server):
    with http_server(proxy(server.uri, RefusesUploads)) as uri:
        line = bad_sweep(tmp_path, data, "--tracking-uri", uri)
    assert f"the MLflow server at {uri} refuses artifact uploads (HTTP 413" in line
