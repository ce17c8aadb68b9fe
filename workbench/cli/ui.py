"""`workbench ui`: the MLflow UI over the store that runs log to, on 127.0.0.1 until Ctrl-C.

It starts `mlflow server` on the same tracking store that `workbench run` uses
(`--tracking-uri`, else $MLFLOW_TRACKING_URI, else ./mlflow.db) with the same
artifact folder, so every run's metrics, plots and model are browsable. MLflow's
background job runner (GenAI jobs: seven extra processes) is switched off. The
server runs in its own process group, stopped as a whole when the UI ends.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from workbench.errors import UserError

DEFAULT_PORT = 5000
LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 10.0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="open the MLflow UI on the runs' tracking store")
    p.add_argument("--tracking-uri", default=None,
                   help="tracking store to show (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    p.add_argument("--host", default=LOOPBACK,
                   help=f"interface to listen on (default {LOOPBACK}: this machine only; the UI has no login)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from workbench.tracking.uri import is_remote, resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    if is_remote(uri):
        print(uri, flush=True)
        print(f"workbench: runs are tracked on the MLflow server {uri}: open it in a browser", file=sys.stderr)
        return 0
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port} is not a TCP port: use 1 to 65535, e.g. --port {DEFAULT_PORT}")
    if not is_loopback(args.host):
        print(f"workbench: warning: the MLflow UI has no login; listening on {args.host} lets anyone who can reach "
              f"this machine on port {args.port} read and delete your runs (MLflow answers only Host names of "
              "localhost and private addresses: set MLFLOW_SERVER_ALLOWED_HOSTS to add a name)", file=sys.stderr)
    check_port_free(args.host, args.port)
    url = f"http://{LOOPBACK if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    server = start_server(uri, args.host, args.port)
    try:
        if not wait_until_up(server, url):
            return 1
        print(url, flush=True)
        print(f"workbench: MLflow UI on {url} showing {uri}; press Ctrl-C to stop", file=sys.stderr, flush=True)
        latest = latest_experiment(url)
        if latest is not None:
            print(f"workbench: the runs of '{latest[1]}': {runs_link(url, latest[0])}", file=sys.stderr, flush=True)
        code = server.wait()
        print(f"workbench: mlflow server exited with code {code} (its messages are above)", file=sys.stderr)
        return 1
    finally:
        stop_server(server)


def runs_link(url: str, experiment_id: str) -> str:
    """The runs table of an experiment in MLflow 3's "Model training" view. The UI starts a new browser on its
    GenAI view, where an experiment opens on an empty traces overview; `workflowType` in the link switches it
    (and the UI remembers the choice)."""
    return f"{url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def latest_experiment(url: str) -> tuple[str, str] | None:
    """(id, name) of the experiment updated last (the Default one only when it is alone), asked of the server;
    None when the server does not say."""
    import json

    request = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/search", method="POST",
                                     data=json.dumps({"max_results": 20, "order_by": ["last_update_time DESC"]})
                                     .encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            experiments = json.load(response).get("experiments", [])
    except (OSError, ValueError):
        return None
    named = [e for e in experiments if e.get("name") != "Default"] or experiments
    return (named[0]["experiment_id"], named[0]["name"]) if named else None


def server_command(uri: str, host: str, port: int) -> list[str]:
    """`mlflow server` on store `uri`; new experiments get the artifact folder runs use."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
               "--host", host, "--port", str(port), "--workers", "1"]
    root = default_artifact_root(uri)
    if root is not None:
        command += ["--default-artifact-root", root.as_uri()]
    return command


def default_artifact_root(uri: str) -> Path | None:
    """Where runs logged straight to `uri` (no server) put artifacts: beside a SQLite file (see
    `workbench.tracking.uri`), inside a file store, else MLflow's ./mlruns."""
    from workbench.tracking.uri import artifact_root

    root = artifact_root(uri)
    if root is not None:
        return root
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else uri).resolve()
    return Path("mlruns").resolve()


def start_server(uri: str, host: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    # Own session: a terminal's Ctrl-C reaches only us, and we stop the whole group.
    # Its own output goes to stderr: stdout carries only the URL.
    return subprocess.Popen(server_command(uri, host, port), env=env, start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=sys.stderr)


def wait_until_up(server: subprocess.Popen, url: str, timeout: float = START_TIMEOUT_S) -> bool:
    """Poll `/health` until the server answers; False (with a message) when it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            print(f"workbench: mlflow server exited with code {server.returncode} before answering "
                  "(its messages are above)", file=sys.stderr)
            return False
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    print(f"workbench: mlflow server did not answer on {url} within {timeout:.0f} s", file=sys.stderr)
    return False


def stop_server(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group; after `STOP_TIMEOUT_S`, SIGKILL to what is left of it."""
    _signal_group(server, signal.SIGTERM)
    try:
        server.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(server, signal.SIGKILL)
    server.wait()


def _signal_group(server: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(server.pid, sig)
    except ProcessLookupError:
        pass


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}): choose another port with --port") from exc
