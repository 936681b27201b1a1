"""The tracking server started the one supported way (`python -m raydistill.tracking_server`), runs and
artifacts over HTTP, and verify_tracking's one-line errors for every way a tracking URI can be wrong.

Servers listen on free loopback ports under tmp_path and are always stopped; waits are generous
because the suite shares two cores."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException, RestException
from mlflow.tracking import MlflowClient

from raydistill import tracking
from raydistill.config import ConfigError
from raydistill.tracking_server import PROBE_EXPERIMENT, TrackingServer, start_server, verify_tracking

HEALTH_TIMEOUT = 180.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_health(uri: str, process: subprocess.Popen, timeout: float = HEALTH_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server exited with {process.returncode}"
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise AssertionError(f"{uri}/health did not answer within {timeout} s")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python -m raydistill.tracking_server` in its own session, as a terminal would run it."""
    root, port = tmp_path_factory.mktemp("mlflow"), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "raydistill.tracking_server", "--host", "127.0.0.1", "--port", str(port),
         "--root", str(root), "--workers", "1", "--timeout", str(HEALTH_TIMEOUT)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    server = TrackingServer(f"http://127.0.0.1:{port}", root, process)
    try:
        wait_health(server.uri, process)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                server.stop()


def test_run_with_artifact_over_http(server, tmp_path):
    client = MlflowClient(server.uri)
    experiment_id = client.create_experiment("http-roundtrip")
    run = client.create_run(experiment_id)
    source = tmp_path / "note.txt"
    source.write_text("distilled")
    client.log_artifact(run.info.run_id, str(source))
    client.set_terminated(run.info.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    back = client.download_artifacts(run.info.run_id, "note.txt", str(tmp_path / "back"))
    assert Path(back).read_text() == "distilled"
    # Stored by the server under its root, not by the client.
    assert [p.read_text() for p in (server.root / "artifacts").rglob("note.txt")] == ["distilled"]
    assert (server.root / "mlflow.db").is_file()


def test_verify_passes_and_leaves_no_probe_run(server):
    verify_tracking(server.uri)
    verify_tracking(server.uri + "/")
    client = MlflowClient(server.uri)
    probe = client.get_experiment_by_name(PROBE_EXPERIMENT)
    assert client.search_runs([probe.experiment_id], run_view_type=ViewType.ACTIVE_ONLY) == []
    assert len(client.search_runs([probe.experiment_id], run_view_type=ViewType.DELETED_ONLY)) == 2


def test_second_server_on_a_busy_port_fails_at_once(server, tmp_path):
    port = int(server.uri.rsplit(":", 1)[1])
    started = time.monotonic()
    with pytest.raises(ConfigError, match="already in use"):
        start_server(tmp_path, port=port)
    assert time.monotonic() - started < 5


def test_server_that_dies_on_start_is_one_line_with_its_log(tmp_path):
    with socket.socket() as taken:  # bound, not listening: our port check passes, uvicorn's bind fails
        taken.bind(("127.0.0.1", 0))
        with pytest.raises(ConfigError) as info:
            start_server(tmp_path, port=taken.getsockname()[1], workers=1, timeout=HEALTH_TIMEOUT)
    message = str(info.value)
    assert "before answering /health" in message and "address already in use" in message.lower(), message
    assert "\n" not in message


def test_bad_host_or_port_fails_before_starting(tmp_path):
    with pytest.raises(ConfigError, match="out of range"):
        start_server(tmp_path, port=70000)
    with pytest.raises(ConfigError, match="cannot use host"):
        start_server(tmp_path, host="no-such-host.invalid", port=free_port())
    with pytest.raises(ConfigError, match="every interface"):
        start_server(tmp_path, host="0.0.0.0", port=free_port())


def test_host_name_not_allowed_is_named(server):
    name = socket.gethostname()
    try:
        if socket.gethostbyname(name) != "127.0.0.1" or name == "localhost":
            pytest.skip("this machine's name does not resolve to 127.0.0.1")
    except OSError:
        pytest.skip("this machine's name does not resolve")
    with pytest.raises(ConfigError, match="allowed-hosts"):
        verify_tracking(server.uri.replace("127.0.0.1", name))


def one_line_error(uri: str, timeout: float = 5.0) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        verify_tracking(uri, timeout=timeout)
    message = str(info.value)
    assert "\n" not in message
    return message, time.monotonic() - started


def test_closed_port_fails_fast():
    message, seconds = one_line_error(f"http://127.0.0.1:{free_port()}")
    assert "no MLflow server answers" in message and seconds < 3


def test_silent_listener_is_bounded_by_the_timeout():
    with socket.socket() as sock:  # accepts connections (kernel backlog) but never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        message, seconds = one_line_error(f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=1.0)
    assert "no MLflow server answers" in message and seconds < 5


def test_plain_http_server_is_not_mlflow(tmp_path):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                "--directory", str(tmp_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not port_open(port):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        message, _ = one_line_error(f"http://127.0.0.1:{port}")
    finally:
        process.kill()
        process.wait()
    assert "is not an MLflow tracking server" in message and "404" in message


def test_server_without_artifact_serving_is_refused(tmp_path):
    """`mlflow server --no-serve-artifacts` would let each client write artifacts to its own disk."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'm.db'}",
         "--no-serve-artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=tmp_path, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    with TrackingServer(f"http://127.0.0.1:{port}", tmp_path, process) as bad:
        wait_health(bad.uri, process)
        message, _ = one_line_error(bad.uri)
    assert "does not serve artifacts" in message


@pytest.mark.parametrize("uri", ["localhost:5000", "http//127.0.0.1:5000", "http://:5000", "http://h:port",
                                 "ftp://127.0.0.1/x", "sqlite://", "sqlite:///:memory:", ""])
def test_malformed_uri(uri):
    message, _ = one_line_error(uri)
    assert "malformed tracking URI" in message


def test_sqlite_in_missing_folder_creates_nothing(tmp_path):
    db = tmp_path / "typo" / "mlflow.db"
    message, _ = one_line_error(f"sqlite:///{db}")
    assert "does not exist" in message
    assert not db.parent.exists()


def test_sqlite_checks_create_nothing(tmp_path):
    db = tmp_path / "mlflow.db"
    verify_tracking(f"sqlite:///{db}")
    assert not db.exists()
    db.write_text("not a database")
    message, _ = one_line_error(f"sqlite:///{db}")
    assert "not an SQLite database" in message


# ---- writes whose answer is lost: MLflow (>= 3.18) does not send a create again; raydistill does ----

def test_a_create_whose_answer_is_lost_is_sent_again_and_leaves_one_run(server, monkeypatch):
    """Through a proxy that commits every run's first create and drops its answer: the sweep's,
    the teacher's and the experiment's creates each come back once, their first copies deleted."""
    from test_multinode import LosesFirstCreateAnswers, http_server, proxy  # here: it loads Ray

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    lost: set[str] = set()
    with http_server(proxy(server.uri, LosesFirstCreateAnswers, lost=lost)) as uri:
        experiment_id = tracking.ensure_experiment(uri, "lost-answers", None)
        sweep = tracking.sweep_run(uri, experiment_id, "sweep-a", {"cells": 2})
        teacher = tracking.teacher_run(uri, experiment_id, "key-a", {"model": "lenet"})
    assert lost == {"sweep-a", "teacher-lenet-key-a"}
    client = MlflowClient(server.uri)
    for role, run_id in (("sweep", sweep), ("teacher", teacher)):
        runs = client.search_runs([experiment_id], f"tags.`{tracking.ROLE}` = '{role}'", run_view_type=ViewType.ALL)
        assert [r.info.run_id for r in runs if r.info.lifecycle_stage == "active"] == [run_id]
        assert len(runs) == 2  # the first copy, soft-deleted
    assert client.get_run(sweep).data.params == {"cells": "2"}


URI = "http://127.0.0.1:5000"  # a tracking server: its creates are sent again (a local store's are not)


def raises(error: Exception):
    def call():
        raise error
    return call


def transient_error() -> Exception:
    return MlflowException("API request to http://x/api/2.0/mlflow/runs/create failed with exception "
                           "('Connection aborted.', RemoteDisconnected('Remote end closed connection without response'))")


def test_retrying_waits_like_mlflow_and_gives_up_after_its_budget(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "3")
    waits: list[float] = []
    failures = iter([transient_error(), MlflowException("bad gateway", error_code="TEMPORARILY_UNAVAILABLE"),
                     RestException({"error_code": "INTERNAL_ERROR", "message": "database is locked"})])

    def flaky() -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return "run-1"

    assert tracking.retrying(URI, flaky, sleep=waits.append) == "run-1"
    assert waits == [0, 6, 12]  # as urllib3 backs off: at once, then factor x 2, x 4

    waits.clear()
    with pytest.raises(MlflowException, match="Connection aborted"):
        tracking.retrying(URI, raises(transient_error()), sleep=waits.append)
    assert waits == [0, 6, 12, 24]  # four retries, five tries

    waits.clear()
    taken = RestException({"error_code": "RESOURCE_ALREADY_EXISTS", "message": "exists"})
    with pytest.raises(RestException, match="exists"):
        tracking.retrying(URI, raises(taken), sleep=waits.append)
    assert waits == []  # a refusal is not sent again
    with pytest.raises(MlflowException, match="Connection aborted"):
        tracking.retrying("sqlite:///mlflow.db", raises(transient_error()), sleep=waits.append)
    assert waits == []  # nor is anything to a local store


def test_ctrl_c_stops_the_server_and_its_workers(server):
    """Last: stops the module's server the way Ctrl-C in its terminal would."""
    port = int(server.uri.rsplit(":", 1)[1])
    server.process.send_signal(signal.SIGINT)
    out, _ = server.process.communicate(timeout=60)
    assert server.process.returncode == 0, out
    assert "MLflow tracking server at" in out and "stopping" in out
    assert not port_open(port)
