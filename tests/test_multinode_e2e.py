"""Two Ray nodes on loopback started with cluster/local.yaml's own start commands (Ray's token from
cluster/secrets.sh), a real `mlflow server`, an S3 API (moto's server mode, a stand-in for Amazon S3) holding the
built-in set, the study submitted with `ray job submit`: trials run on both nodes and reach MLflow over HTTP only;
the images are read from the bucket once, by the head, whose decode cache the other node downloads from the
study's storage in the bucket; without the token, job submissions to the dashboard and to a node's agent are
refused and a node cannot join. Each node has a cache folder of its own, as separate machines would. Everything started here is stopped at the end (our process trees only: no
`ray stop`, which would end every Ray on the machine)."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from analysis.reading.runs import trial_rows
from tests.servers import BIN, wait_http
from tests.tracking_stack import S3
from trainables.data.builtin_dataset import ensure_builtin_dataset
from trainables.net import free_port
from trainables.tracking.mlflow_runs import latest_study

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "cluster" / "local.yaml").read_text())
pytestmark = pytest.mark.e2e


def ray(*args, env, **kw):
    return subprocess.run(
        [str(BIN / "ray"), *args], capture_output=True, text=True, timeout=600, env={**os.environ, **env}, **kw
    )


def sub(command: str, old: str, new: str) -> str:
    assert old in command, f"cluster/local.yaml changed: no {old!r} in {command!r}"
    return command.replace(old, new)


def start_command(kind: str, secrets: Path, gcs_port: int, extra: str) -> str:
    """cluster/local.yaml's own `ray start` line of `kind` (head or worker), on loopback: the secrets folder,
    GCS port and head address are this test's; no autoscaler config (no machines to start); --block keeps the
    node's processes under one process tree we can end."""
    (command,) = [c for c in CONFIG[f"{kind}_start_ray_commands"] if "ray start" in c]
    command = sub(command, "~/.artsweep/", f"{secrets}/")
    command = sub(command, "ray start", f"{BIN / 'ray'} start")
    if kind == "head":
        command = sub(command, "--port=6379", f"--port={gcs_port}")
        command = sub(command, " --autoscaling-config=~/ray_bootstrap_config.yaml", "")
    else:
        command = sub(command, "$RAY_HEAD_IP:6379", f"127.0.0.1:{gcs_port}")
    return f"{command} --num-cpus=1 --block {extra}"


def without_token(command: str) -> str:
    """The same command with its RAY_AUTH_* assignments removed: a node that does not hold the token."""
    words = shlex.split(command)
    assert words[0].startswith("RAY_AUTH_MODE=") and words[1].startswith("RAY_AUTH_TOKEN_PATH=")
    return shlex.join(words[2:])


def spawn(command: str, log: Path, env: dict | None = None) -> subprocess.Popen:
    """Run a node's start command as the cluster file's shell line would, with no RAY_AUTH_* of ours; `env`: what
    the machine's own environment adds (its instance profile's S3 access, its cache folder)."""
    return subprocess.Popen(
        ["bash", "-c", command],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}, **(env or {})},
        start_new_session=True,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )


@dataclass
class Cluster:
    work: Path
    mlflow_uri: str
    dashboard: str
    gcs_port: int
    head: subprocess.Popen  # the head's `ray start --block`
    node: subprocess.Popen  # the non-head node's `ray start --block` (its process tree is the node)
    agents: dict  # each node's dashboard agent HTTP port: {"head": port, "worker": port}
    auth: dict  # what a client of this cluster sets: RAY_AUTH_MODE and RAY_AUTH_TOKEN_PATH
    procs: list  # every `ray start` the test ran, ended at teardown
    s3: S3  # the bucket: the built-in set under builtin/
    caches: dict  # each node's ARTSWEEP_CACHE: {"head": folder, "worker": folder}


def nodes_of(dashboard: str, auth: dict) -> list[dict]:
    out = ray("list", "nodes", f"--address={dashboard}", "--format=json", env=auth)
    try:
        return [n for n in json.loads(out.stdout) if n.get("state") == "ALIVE"]
    except ValueError:
        return []


def no_placement_groups(dashboard: str, auth: dict, wait_s: float = 60) -> bool:
    """Whether the cluster holds no placement group that is not removed (within `wait_s`): nothing left of a study
    shapes where the next one's trials go."""
    deadline = time.monotonic() + wait_s
    while True:
        out = ray("list", "placement-groups", f"--address={dashboard}", "--format=json", env=auth)
        try:
            if not [g for g in json.loads(out.stdout) if g.get("state") != "REMOVED"]:
                return True
        except ValueError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(1)


def post(url: str, body: dict, token: str | None = None, wait_s: float = 30) -> int:
    """The HTTP status of a JSON POST (with a bearer token when given); a node's agent starts listening a few
    seconds after the node joins, so a refused connection is retried for `wait_s`."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    deadline = time.monotonic() + wait_s
    while True:
        request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a process and everything below it (the node's raylet, its workers), children first."""
    try:
        root = psutil.Process(pid)
        tree = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for p in tree:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def stop_node(proc: subprocess.Popen) -> None:
    """End a `ray start --block` node and every process below it: `ray stop --force` for this node alone."""
    kill_tree(proc.pid)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two nodes on loopback, token-authenticated, for both tests (a cluster takes ~45 s to start on 2 cores): the
    first test's study is a Ray job, whose placement groups and actors Ray removes when it ends (the second test
    waits for that: `no_placement_groups`); the second takes a node away, so it runs last, in file order."""
    work = tmp_path_factory.mktemp("multinode")
    secrets = work / "secrets"
    subprocess.run(["bash", ROOT / "cluster" / "secrets.sh", secrets], check=True, capture_output=True)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(secrets / "ray_token")}  # what the README says
    mlflow_port, gcs_port, dash_port = free_port(), free_port(), free_port()
    agents = {"head": free_port(), "worker": free_port()}
    server = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(mlflow_port),
            "--backend-store-uri",
            f"sqlite:///{work / 'server.db'}",
            "--artifacts-destination",
            str(work / "artifacts"),
        ],
        stdout=open(work / "mlflow.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    procs, s3 = [], S3(work).start()
    caches = {kind: work / f"cache-{kind}" for kind in ("head", "worker")}
    try:
        s3.upload(ensure_builtin_dataset(), "builtin")
        wait_http(f"http://127.0.0.1:{mlflow_port}/health")
        head_extra = (
            f"--dashboard-port={dash_port} --include-dashboard=true --dashboard-agent-listen-port={agents['head']} "
            f"--ray-client-server-port={free_port()}"
        )
        head_env = {**s3.data_env, "ARTSWEEP_CACHE": str(caches["head"])}
        head = spawn(start_command("head", secrets, gcs_port, head_extra), work / "head.log", head_env)
        procs.append(head)
        wait_http(f"http://127.0.0.1:{dash_port}/api/version")  # 401 without the token: up
        worker_extra = f"--dashboard-agent-listen-port={agents['worker']}"
        node_env = {**s3.data_env, "ARTSWEEP_CACHE": str(caches["worker"])}
        node = spawn(start_command("worker", secrets, gcs_port, worker_extra), work / "node.log", node_env)
        procs.append(node)
        deadline, dashboard = time.monotonic() + 120, f"http://127.0.0.1:{dash_port}"
        while len(nodes_of(dashboard, auth)) < 2:
            assert node.poll() is None and time.monotonic() < deadline, (work / "node.log").read_text()[-2000:]
            time.sleep(1)
        uri = f"http://127.0.0.1:{mlflow_port}"
        yield Cluster(work, uri, dashboard, gcs_port, head, node, agents, auth, procs, s3, caches)
    finally:
        for proc in reversed(procs):
            stop_node(proc)
        s3.stop()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


STUDY_EPOCHS = 4


def test_without_the_token_nothing_gets_in_and_with_it_a_study_runs_on_both_nodes(cluster):
    work, mlflow_uri, dashboard = cluster.work, cluster.mlflow_uri, cluster.dashboard
    # a node that lacks the token (the worker's own start command without its RAY_AUTH_* variables) tries to join
    # while the study runs: the GCS refuses it (it gives up after ~20 s of retries and exits)
    rogue_command = without_token(
        start_command("worker", work, cluster.gcs_port, f"--dashboard-agent-listen-port={free_port()}")
    )
    rogue = spawn(rogue_command, work / "rogue.log")
    cluster.procs.append(rogue)
    # job submissions without the token: the dashboard answers 401 (403 with a wrong one), each node's agent 401
    entry = {"entrypoint": f"touch {work / 'pwned'}"}
    assert post(f"{dashboard}/api/jobs/", entry) == 401
    assert post(f"{dashboard}/api/jobs/", entry, token="0" * 64) == 403
    for port in cluster.agents.values():
        assert post(f"http://127.0.0.1:{port}/api/job_agent/jobs/", entry) == 401
    for _ in range(30):  # the head's job agent registers a few seconds after the dashboard answers
        job = ray(
            "job",
            "submit",
            f"--address={dashboard}",
            "--",
            sys.executable,
            str(ROOT / "tune.py"),
            "--address",
            "auto",
            "--smoke",
            "--num-samples",
            "4",
            "--max-epochs",  # trials of a few epochs: a 1-epoch trial can end before the other node's actor
            str(STUDY_EPOCHS),  # is up, and Tune then gives the next trial to the head's free actor (reuse_actors)
            "--set",  # half-width networks: ~8 s an epoch on a 1-CPU node instead of ~22 at full width
            "width=0.5",
            "--no-early-stopping",
            "--experiment",
            "multinode",
            "--mlflow-uri",
            mlflow_uri,
            "--data",
            f"s3://{cluster.s3.bucket}/builtin",
            "--storage",
            f"s3://{cluster.s3.bucket}/studies",
            env=cluster.auth,  # RAY_AUTH_MODE=token + RAY_AUTH_TOKEN_PATH, as the README's client sets them
        )
        out = job.stdout + job.stderr
        if "No available agent to submit job" not in out:
            break
        time.sleep(2)
    assert job.returncode == 0 and "succeeded" in out, out[-4000:]
    assert "2 trial(s) at a time" in out and "best trial" in out
    client = MlflowClient(mlflow_uri)
    exp, parent = latest_study(client, "multinode")
    rows = trial_rows(client, exp.experiment_id, parent.info.run_id)
    assert len(rows) == 4 and all(r.status == "FINISHED" and r.epochs == STUDY_EPOCHS for r in rows)
    nodes = {client.get_run(r.run_id).data.tags["node_id"] for r in rows}
    assert len(nodes) == 2, "trials ran on one node only"
    for r in rows:  # artifacts went through the server
        assert client.get_run(r.run_id).info.artifact_uri.startswith("mlflow-artifacts:")
        assert client.list_artifacts(r.run_id, "checkpoint")
    assert list(work.glob("**/mlflow.db")) == []  # no node-local store was created
    # the images were read from the bucket once, by the head's build (plus the scan's one probe); the other node
    # downloaded the head's cache from the study's storage in the bucket
    metas = {k: [json.loads(p.read_text()) for p in c.glob("decoded/*/meta.json")] for k, c in cluster.caches.items()}
    assert [m["source"] for m in metas["head"]] == ["built"] and metas["head"][0]["bad"] == []
    assert [m["source"] for m in metas["worker"]] == ["downloaded"], metas
    assert metas["worker"][0]["downloaded_from"] == f"s3://{cluster.s3.bucket}/studies"
    reads = (work / "moto.log").read_text().count(f'"GET /{cluster.s3.bucket}/builtin/')
    images = [p for p in ensure_builtin_dataset().rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert reads == len(images) + 1, reads
    assert cluster.s3.keys("studies/decoded/")  # published for any node to come
    # the study checked both nodes' Ray and torch against the head's (sweep/cluster.py); the same check here
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import json, ray; ray.init(address='127.0.0.1:{cluster.gcs_port}', logging_level='ERROR'); "
            "from sweep.cluster import node_versions; "
            "print(json.dumps(node_versions([n for n in ray.nodes() if n['Alive']])))",
        ],
        env={**os.environ, **cluster.auth},
        capture_output=True,
        text=True,
        timeout=120,
    )
    versions = json.loads(check.stdout.splitlines()[-1])
    mine = {"ray": metadata.version("ray"), "torch": __import__("torch").__version__}
    assert len(versions) == 2 and all(v == mine for v in versions.values()), check.stdout + check.stderr
    # the tokenless node never joined and has given up; nothing ran the unauthenticated job
    assert rogue.wait(timeout=60) != 0, (work / "rogue.log").read_text()[-2000:]
    assert "InvalidAuthToken" in (work / "rogue.log").read_text()
    assert len(nodes_of(dashboard, cluster.auth)) == 2 and not (work / "pwned").exists()


EPOCHS = 6  # half-width networks: the kill lands between epochs 2 and 4


def test_a_lost_node_takes_no_trial_with_it(cluster):
    """SIGKILL the non-head node (its process tree: raylet and workers) while a trial trains there: that trial's
    workers restart on the head from its last epoch (once the head has room), and both trials finish."""
    client, experiment = MlflowClient(cluster.mlflow_uri), "lose-node"
    assert no_placement_groups(cluster.dashboard, cluster.auth), "an earlier study's placement groups outlived it"
    cmd = [
        sys.executable,
        str(ROOT / "tune.py"),
        "--address",
        f"127.0.0.1:{cluster.gcs_port}",
        "--smoke",
        "--num-samples",
        "2",
        "--max-epochs",
        str(EPOCHS),
        "--set",
        "width=0.5",
        "--no-early-stopping",
        "--experiment",
        experiment,
        "--mlflow-uri",
        cluster.mlflow_uri,
        "--storage",
        str(cluster.work / "ray_results"),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=cluster.work,
        env={**os.environ, **cluster.auth},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    worker_node = next(n["node_id"] for n in nodes_of(cluster.dashboard, cluster.auth) if not n["is_head_node"])
    deadline, lost, seen = time.monotonic() + 300, None, 0
    while lost is None and proc.poll() is None and time.monotonic() < deadline:
        for r in _rows(client, experiment):  # a trial's first report tags the node it trains on
            # MLflow records an epoch before Tune's driver has taken that epoch's checkpoint (a kill in between
            # rightly restarts the trial from scratch), so wait for epoch 2: epoch 1's checkpoint is then Tune's
            if client.get_run(r.run_id).data.tags.get("node_id") == worker_node and 2 <= r.epochs <= EPOCHS - 2:
                kill_tree(cluster.node.pid)  # mid-trial: take its node away
                lost, seen = r.run_id, r.epochs
                break
        time.sleep(0.5)
    out = proc.communicate(timeout=600)[0]
    assert lost is not None, "never saw a trial on the second node:\n" + out[-3000:]
    assert proc.returncode == 0, out[-4000:]
    rows = _rows(client, experiment)
    assert len(rows) == 2 and all(r.status == "FINISHED" and r.epochs == EPOCHS for r in rows), rows
    tags = client.get_run(lost).data.tags
    assert tags["node_id"] != worker_node, tags  # went on, on the head
    assert seen - 1 <= int(tags.get("resumed_from_epoch", 0)) <= seen + 1, (seen, tags)  # from its last checkpoint


def _rows(client, experiment):
    try:
        exp, parent = latest_study(client, experiment)
    except LookupError:
        return []
    return trial_rows(client, exp.experiment_id, parent.info.run_id)
