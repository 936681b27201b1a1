"""The MLflow tracking server, started one way everywhere (tests, the CLI, the cluster files), and a
check that a tracking URI really works before a sweep relies on it.

The server keeps its runs in sqlite on local disk and proxies artifacts (`--serve-artifacts`), so
trials on other nodes need only HTTP to it, never a shared disk. It has no authentication: bind it
to loopback or to a private address, never to every interface.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from raydistill.config import ConfigError

LOG_NAME = "server.log"
PROBE_EXPERIMENT = "raydistill-probe"
SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass
class TrackingServer:
    """A running `mlflow server`: its URI, its folder (store, artifacts, log) and its process group."""

    uri: str
    root: Path
    process: subprocess.Popen
    log_offset: int = 0  # where this start's lines begin in the (appended) log

    @property
    def log_path(self) -> Path:
        return self.root / LOG_NAME

    def log_tail(self) -> str:
        """This start's last error lines and last lines, on one line, for error messages."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return "no server log"
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower()]
        shown = list(dict.fromkeys(errors[-2:] + lines[-3:]))
        return "server log: " + " | ".join(shown) if shown else "server log is empty"

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the whole group (uvicorn's workers too), SIGKILL whatever is left after `timeout`."""
        _signal_group(self.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _signal_group(self.process.pid, 0):
            self.process.poll()  # reap the leader, or it stays in the group as a zombie
            time.sleep(0.1)
        _signal_group(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def __enter__(self) -> TrackingServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(root: str | Path, host: str = "127.0.0.1", port: int = 5000, *,
                 allowed_hosts: Sequence[str] = (), cors_origins: Sequence[str] = (),
                 workers: int = 2, timeout: float = 60.0) -> TrackingServer:
    """Start `mlflow server` on `host:port` with its store `root/mlflow.db` and artifacts under
    `root/artifacts`, and return once /health answers.

    Accepted Host headers: `host:port` and loopback (SSH tunnels) plus `allowed_hosts`; accepted
    browser origins: `http://host:port` and loopback plus `cors_origins`. Two workers by default:
    sqlite serialises writes anyway, and each worker is a full Python process.
    """
    root = Path(root).resolve()
    (root / "artifacts").mkdir(parents=True, exist_ok=True)
    uri = f"http://{host}:{port}"
    if not 0 < port < 65536:
        raise ConfigError(f"port {port} is out of range (1-65535)")
    if host in ("", "0.0.0.0", "::"):
        raise ConfigError("the MLflow server has no authentication: bind it to loopback or to a private "
                          "address, not to every interface")
    if _listening(host, port):
        # Else /health could be answered by that other server while ours dies on the busy port.
        raise ConfigError(f"{host}:{port} is already in use (another MLflow server?); stop it or choose another port")
    db_uri = f"sqlite:///{root / 'mlflow.db'}"
    _create_store(db_uri)
    hosts = dict.fromkeys([f"{host}:{port}", "localhost:*", "127.0.0.1:*", *allowed_hosts])
    origins = dict.fromkeys([f"http://{host}:{port}", *cors_origins])
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", db_uri,
               "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
               "--host", host, "--port", str(port), "--workers", str(workers),
               "--allowed-hosts", ",".join(hosts), "--cors-allowed-origins", ",".join(origins)]
    # No job runner: it serves GenAI features only and adds eight processes.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log_offset = (root / LOG_NAME).stat().st_size if (root / LOG_NAME).exists() else 0
    with open(root / LOG_NAME, "ab") as log:
        # Its own session: Ctrl-C in a terminal reaches our main(), which stops the whole group.
        process = subprocess.Popen(command, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = TrackingServer(uri, root, process, log_offset)
    try:
        _wait_healthy(server, f"{uri}/health", timeout)
    except BaseException:
        server.stop()
        raise
    return server


def verify_tracking(uri: str, timeout: float = 5.0) -> None:
    """Raise ConfigError (one line) unless `uri` is an MLflow server that accepts and returns
    artifacts, or a sqlite file whose folder exists and is writable.

    The server is probed with a throwaway run in the experiment `raydistill-probe` (deleted
    afterwards); every request is bounded by `timeout` and nothing is retried. Nothing is created
    for a sqlite URI.
    """
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme == "sqlite":
        _verify_sqlite(uri)
        return
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ConfigError(f"malformed tracking URI {uri!r}: use http://HOST:PORT (an MLflow server) "
                          "or sqlite:////ABSOLUTE/PATH/mlflow.db")
    base = uri.rstrip("/")
    try:
        status, body = _call("GET", f"{base}/api/2.0/mlflow/experiments/search?max_results=1", timeout)
    except (OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", None) or err or type(err).__name__
        raise ConfigError(f"no MLflow server answers at {base} ({reason}); start one "
                          "(python -m raydistill.tracking_server) or fix the tracking URI") from None
    if status == 403 and b"Host header" in body:
        raise ConfigError(f"the MLflow server at {base} rejects the host name {parts.hostname!r}: "
                          "add it to the server's --allowed-hosts or use its private IP")
    if status != 200 or not isinstance(_json(body), dict):
        raise ConfigError(f"{base} answers HTTP but is not an MLflow tracking server "
                          f"(GET /api/2.0/mlflow/experiments/search gave HTTP {status})")
    _probe_artifacts(base, timeout)


# ---- helpers ----------------------------------------------------------------------------------

def _listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        try:
            return sock.connect_ex((host, port)) == 0
        except OSError as err:  # e.g. a host name that does not resolve
            raise ConfigError(f"cannot use host {host!r}: {err}") from None


def _signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to the process group; False once no process of it is left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _create_store(db_uri: str) -> None:
    """Create (or migrate) the sqlite schema here, once, before any server worker opens the file:
    several processes migrating a new file at once corrupt it."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    try:
        SqlAlchemyStore(db_uri, "mlflow-artifacts:/").engine.dispose()
    except Exception as err:
        raise ConfigError(f"cannot open the MLflow store {db_uri}: {str(err).splitlines()[0]}") from None


def _wait_healthy(server: TrackingServer, health_url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = server.process.poll()
        if code is not None:
            raise ConfigError(f"mlflow server for {server.uri} exited with code {code} before "
                              f"answering /health; {server.log_tail()}")
        try:
            with urllib.request.urlopen(health_url, timeout=2.0) as response:
                if response.status == 200:
                    return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.25)
    raise ConfigError(f"mlflow server for {server.uri} did not answer /health within {timeout:.0f} s; "
                      f"{server.log_tail()}")


def _call(method: str, url: str, timeout: float, data: bytes | dict | None = None) -> tuple[int, bytes]:
    """One HTTP request, no retries: (status, body), also for error statuses."""
    headers = {}
    if isinstance(data, dict):
        data, headers = json.dumps(data).encode(), {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _message(body: bytes) -> str:
    parsed = _json(body)
    text = parsed.get("message", "") if isinstance(parsed, dict) else body.decode(errors="replace")
    return " ".join(str(text).split())[:200]


def _request(base: str, method: str, endpoint: str, timeout: float, payload: dict | None = None) -> tuple[int, bytes]:
    try:
        return _call(method, f"{base}/api/2.0/mlflow/{endpoint}", timeout, payload)
    except (OSError, http.client.HTTPException) as err:
        raise ConfigError(f"the MLflow server at {base} stopped answering ({err})") from None


def _rest(base: str, method: str, endpoint: str, timeout: float, payload: dict | None = None) -> dict:
    status, body = _request(base, method, endpoint, timeout, payload)
    if status != 200:
        raise ConfigError(f"the MLflow server at {base} refused {endpoint} (HTTP {status}: {_message(body)})")
    return json.loads(body)


def _probe_experiment(base: str, timeout: float) -> str:
    endpoint = "experiments/get-by-name?" + urllib.parse.urlencode({"experiment_name": PROBE_EXPERIMENT})
    status, body = _request(base, "GET", endpoint, timeout)
    if status == 404:
        return _rest(base, "POST", "experiments/create", timeout, {"name": PROBE_EXPERIMENT})["experiment_id"]
    if status != 200:
        raise ConfigError(f"the MLflow server at {base} refused {endpoint} (HTTP {status}: {_message(body)})")
    experiment = json.loads(body)["experiment"]
    if experiment["lifecycle_stage"] == "deleted":
        _rest(base, "POST", "experiments/restore", timeout, {"experiment_id": experiment["experiment_id"]})
    return experiment["experiment_id"]


def _probe_artifacts(base: str, timeout: float) -> None:
    """Upload a few bytes to a throwaway run and read them back: a server started with
    --no-serve-artifacts hands clients a path on their own disk, which other nodes never see."""
    experiment_id = _probe_experiment(base, timeout)
    run = _rest(base, "POST", "runs/create", timeout,
                {"experiment_id": experiment_id, "run_name": "artifact-probe",
                 "start_time": int(time.time() * 1000)})["run"]["info"]
    try:
        _upload_and_read_back(base, run["artifact_uri"], timeout)
    finally:
        _rest(base, "POST", "runs/delete", timeout, {"run_id": run["run_id"]})


def _upload_and_read_back(base: str, artifact_uri: str, timeout: float) -> None:
    parts = urllib.parse.urlsplit(artifact_uri)
    if parts.scheme in ("", "file"):
        raise ConfigError(f"the MLflow server at {base} does not serve artifacts: runs of experiment "
                          f"{PROBE_EXPERIMENT!r} would write them to {artifact_uri} on each client's own disk "
                          "(start it with --serve-artifacts, as python -m raydistill.tracking_server does)")
    if parts.scheme != "mlflow-artifacts":
        _upload_direct(artifact_uri)
        return
    url = f"{base}/api/2.0/mlflow-artifacts/artifacts/{parts.path.strip('/')}/probe.txt"
    payload = uuid.uuid4().hex.encode()
    try:
        put_status, put_body = _call("PUT", url, timeout, payload)
        get_status, get_body = _call("GET", url, timeout) if put_status == 200 else (0, b"")
    except (OSError, http.client.HTTPException) as err:
        raise ConfigError(f"the MLflow server at {base} stopped answering during an artifact upload ({err})") from None
    if put_status != 200:
        raise ConfigError(f"the MLflow server at {base} refuses artifact uploads "
                          f"(HTTP {put_status}: {_message(put_body)})")
    if get_status != 200 or get_body != payload:
        raise ConfigError(f"the MLflow server at {base} does not return uploaded artifacts (HTTP {get_status})")


def _upload_direct(artifact_uri: str) -> None:
    """Artifact roots such as s3:// are written by each client itself: try it from here."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.txt"
        probe.write_text("probe")
        try:
            get_artifact_repository(artifact_uri).log_artifact(str(probe))
        except Exception as err:
            first = str(err).splitlines()[0] if str(err) else ""
            raise ConfigError(f"cannot write artifacts to {artifact_uri} from here "
                              f"({type(err).__name__}: {first})") from None


def _verify_sqlite(uri: str) -> None:
    path_text = uri.removeprefix("sqlite:///")
    if path_text == uri or not path_text or path_text.startswith(":memory:"):
        raise ConfigError(f"malformed tracking URI {uri!r}: a sqlite store needs a file, "
                          "e.g. sqlite:////ABSOLUTE/PATH/mlflow.db")
    path = Path(path_text)
    if path.exists():
        if not path.is_file():
            raise ConfigError(f"the MLflow store {path} is not a file")
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_MAGIC))
        if header and header != SQLITE_MAGIC:
            raise ConfigError(f"the MLflow store {path} is not an SQLite database")
        if not os.access(path, os.W_OK):
            raise ConfigError(f"the MLflow store {path} is not writable")
    elif not path.parent.is_dir():
        raise ConfigError(f"the folder of the MLflow store {path} does not exist; create it or fix the tracking URI")
    elif not os.access(path.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"the folder of the MLflow store {path} is not writable")


# ---- command line -----------------------------------------------------------------------------

def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """SIGTERM (`kill` of a nohup'd copy) and SIGINT raise KeyboardInterrupt in the foreground
    process that runs a server, also where SIGINT was ignored at start (a shell's `&`)."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raydistill.tracking_server",
                                     description="Run the MLflow tracking server in the foreground until Ctrl-C.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind: loopback, or the head's private IP on a cluster (the server "
                             "has no authentication: never every interface)")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--root", required=True, help="folder for mlflow.db, artifacts/ and server.log")
    parser.add_argument("--allowed-hosts", default="", help="extra accepted Host headers, comma-separated")
    parser.add_argument("--cors-allowed-origins", default="", help="extra accepted browser origins, comma-separated")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for /health")
    args = parser.parse_args(argv)
    stop_on_signals()
    try:
        server = start_server(args.root, args.host, args.port, workers=args.workers, timeout=args.timeout,
                              allowed_hosts=[h for h in args.allowed_hosts.split(",") if h],
                              cors_origins=[o for o in args.cors_allowed_origins.split(",") if o])
    except (ConfigError, KeyboardInterrupt) as err:
        print(f"error: {err or 'interrupted'}", file=sys.stderr)
        return 1
    print(f"MLflow tracking server at {server.uri} (store {server.root / 'mlflow.db'}, artifacts "
          f"{server.root / 'artifacts'}, log {server.log_path}); Ctrl-C stops it", flush=True)
    try:
        code = server.process.wait()
    except KeyboardInterrupt:
        print("stopping the MLflow tracking server", flush=True)
        return 0
    finally:
        server.stop()
    print(f"error: mlflow server exited with code {code}; {server.log_tail()}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
