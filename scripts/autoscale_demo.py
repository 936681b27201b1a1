"""Autoscaling, shown on one machine: Ray's fake multi-node autoscaler launches GPU nodes for a Tune
sweep whose trials ask for fractional GPUs, then removes them once idle.

    python scripts/autoscale_demo.py [--trials 4] [--gpu 0.5] [--seconds 20]

Starts `RAY_FAKE_CLUSTER=1 ray start --head --block` with scripts/fake-autoscaler.yaml (the head has
no GPU, so every trial needs a launched node), prints each node joining and leaving with the time
since start, and each trial's node and GPU. Everything it started is stopped at the end, on error
and on Ctrl-C: the processes of the head's session, not `ray stop` (that would stop every Ray on
the machine). Fake GPUs are logical: this shows the autoscaler's decisions, not real hardware.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

os.environ["RAY_AUTH_MODE"] = "disabled"  # a throwaway local cluster: no token, for the driver too
import ray  # noqa: E402  (after the setting above)
from ray import tune  # noqa: E402

CONFIG = Path(__file__).with_name("fake-autoscaler.yaml")
T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f} s] {text}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def session_pids(sid: int) -> list[int]:
    """Processes of one session (what `ray start` and its children run in), from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.name.isdigit() and int(fields[3]) == sid:
            pids.append(int(entry.name))
    return pids


def stop_session(head: subprocess.Popen, grace: float = 10.0) -> int:
    """SIGTERM every process of the head's session, SIGKILL what is left after `grace` (as `ray stop`
    does for every Ray process of the machine)."""
    pids = session_pids(head.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in session_pids(head.pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            head.poll()
            if not session_pids(head.pid):
                return len(pids)
            time.sleep(0.2)
    return len(pids)


def watch(stop: threading.Event, events: Path) -> None:
    """Print nodes joining and leaving (ray.nodes(), from the GCS) and the autoscaler's events."""
    alive: dict[str, dict] = {}
    seen = 0
    while not stop.is_set():
        now = {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}
        for node_id in sorted(now.keys() - alive.keys()):
            res = now[node_id]["Resources"]
            say(f"+ node ...{node_id[-5:]} joined (CPU {res.get('CPU', 0):g}, GPU {res.get('GPU', 0):g}); "
                f"{len(now)} alive")
        for node_id in sorted(alive.keys() - now.keys()):
            say(f"- node ...{node_id[-5:]} left; {len(now)} alive")
        alive = now
        lines = events.read_text().splitlines() if events.exists() else []
        for line in lines[seen:]:
            say(f"autoscaler: {json.loads(line)['message']}")
        seen = len(lines)
        stop.wait(0.5)


def trial(config: dict) -> None:
    time.sleep(config["seconds"])
    context = ray.get_runtime_context()
    tune.report({"node": context.get_node_id()[-5:], "gpus": ",".join(map(str, ray.get_gpu_ids()))})


def run_sweep(trials: int, gpu: float, seconds: float, storage: Path) -> int:
    """Run the sweep; return how many trials finished (Tune ends early on Ctrl-C)."""
    tuner = tune.Tuner(
        tune.with_resources(trial, {"cpu": 1, "gpu": gpu}),
        param_space={"seconds": seconds, "i": tune.grid_search(list(range(trials)))},
        run_config=tune.RunConfig(name="autoscale-demo", storage_path=str(storage), verbose=0),
    )
    finished = 0
    for result in tuner.fit():
        if result.error:
            raise result.error
        if "node" in result.metrics:
            finished += 1
            say(f"trial {result.config['i']} ran on node ...{result.metrics['node']} "
                f"with GPU ids [{result.metrics['gpus']}]")
    return finished


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--gpu", type=float, default=0.5, help="GPU share per trial")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each trial runs")
    parser.add_argument("--scale-down-timeout", type=float, default=120.0,
                        help="seconds to wait after the sweep for the idle nodes to be removed")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="raydistill-autoscale-"))
    config = yaml.safe_load(CONFIG.read_text())
    port = free_port()
    config["provider"]["gcs_address"] = f"127.0.0.1:{port}"
    (tmp / "autoscaler.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1"}
    command = ["ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
               "--num-cpus=1", "--num-gpus=0", "--object-store-memory=100000000",
               f"--autoscaling-config={tmp / 'autoscaler.yaml'}", "--include-dashboard=false",
               f"--dashboard-agent-listen-port={free_port()}",
               f"--temp-dir={tmp / 'ray'}", "--disable-usage-stats"]
    say(f"starting the head: RAY_FAKE_CLUSTER=1 {' '.join(command)} (log {tmp / 'head.log'})")
    with open(tmp / "head.log", "wb") as log:
        head = subprocess.Popen([str(Path(sys.executable).with_name("ray")), *command[1:]], env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    stop = threading.Event()
    try:
        deadline = time.monotonic() + 120
        while not _listening(port):
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head did not start; see {tmp / 'head.log'}")
            time.sleep(0.5)
        ray.init(address=f"127.0.0.1:{port}", log_to_driver=False)
        events = tmp / "ray" / "session_latest" / "logs" / "events" / "event_AUTOSCALER.log"
        watcher = threading.Thread(target=watch, args=(stop, events), daemon=True)
        watcher.start()
        say(f"sweep: {args.trials} trials, each {{'cpu': 1, 'gpu': {args.gpu:g}}}, {args.seconds:g} s; "
            f"worker type ray.worker.gpu = {config['available_node_types']['ray.worker.gpu']['resources']}")
        finished = run_sweep(args.trials, args.gpu, args.seconds, tmp / "tune")
        if finished < args.trials:
            say(f"sweep stopped after {finished} of {args.trials} trials")
            return 130
        say(f"sweep done; waiting for idle nodes to be removed (idle_timeout_minutes {config['idle_timeout_minutes']})")
        deadline = time.monotonic() + args.scale_down_timeout
        while len([n for n in ray.nodes() if n["Alive"]]) > 1 and time.monotonic() < deadline:
            time.sleep(1)
        workers_left = len([n for n in ray.nodes() if n["Alive"]]) - 1
        time.sleep(1)  # let the watcher print the last removal
        say("all worker nodes removed" if workers_left == 0 else f"{workers_left} worker node(s) still up")
        return 0 if workers_left == 0 else 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        stop.set()
        ray.shutdown()
        say(f"stopped {stop_session(head)} processes of the head's session")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":
    sys.exit(main())
