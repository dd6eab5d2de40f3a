"""Both cluster-launcher configs pass the validation `ray up` itself runs (prepare_config + validate_config),
and hold what keeps a cloud account closed: Ray's token before every `ray start`, the cluster's own security
group (SSH from one CIDR), IMDSv2, one instance profile per node type scoped by its policy, the repo's pins, no
secret in the synced checkout, and a tracking server whose artifacts go to object storage."""

import fnmatch
import json
import os
import re
import shlex
import stat
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from mlflow.utils.credentials import read_mlflow_creds
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
FILES = ["gpu.yaml", "local.yaml"]
TOKEN_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": "~/.artsweep/ray_token"}


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def start_commands(config: dict) -> list[str]:
    return [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c]


def policy(name: str) -> list[dict]:
    return json.loads((CLUSTER / "aws" / name).read_text())["Statement"]


@pytest.mark.unit
@pytest.mark.parametrize("name", FILES)
def test_config_passes_ray_up_validation(name):
    config = prepare_config(load(name))
    config.setdefault("cluster_synced_files", [])  # `ray up` adds it before validating
    validate_config(config)
    head_start = " ".join(config["head_start_ray_commands"])
    assert "artsweep_driver" in head_start, "trial drivers must fit on the head (and only there)"
    assert "--dashboard-host=127.0.0.1" in head_start  # no dashboard on the internet
    assert "mlflow server" not in head_start  # the server starts through its script only
    (tracking,) = [c for c in config["head_start_ray_commands"] if "mlflow_server.sh" in c]
    assert shlex.split(tracking)[-2:] == ["~/artsweep/cluster/mlflow_server.sh", "s3://YOUR-BUCKET/mlflow"]
    assert (CLUSTER / "mlflow_server.sh").is_file()


@pytest.mark.unit
@pytest.mark.parametrize("name", FILES)
def test_the_token_is_set_before_every_ray_start(name):
    config = load(name)
    starts = start_commands(config)
    assert len(starts) == 2  # the head's and the workers'
    for command in starts:
        words = shlex.split(command)
        env = dict(w.split("=", 1) for w in words[: words.index("ray")])
        assert env == TOKEN_ENV, command
    # the token file reaches every node through the secrets mount, owner-only
    assert config["file_mounts"][next(k for k in config["file_mounts"] if k.endswith("/.artsweep"))] == "~/.artsweep"
    setup = " && ".join(config["setup_commands"])
    assert "chmod 700 ~/.artsweep && chmod 600 ~/.artsweep/*" in setup
    assert "ln -sfn ~/.artsweep/ray_token ~/.ray/auth_token" in setup  # `--address auto` finds it there
    assert config["worker_setup_commands"] == ["rm -f ~/.artsweep/mlflow.env"]  # the tracking secrets: head only
    assert "cluster/head_secrets.sh" in " ".join(config["head_setup_commands"])
    tracking = next(c for c in config["head_start_ray_commands"] if "mlflow_server.sh" in c)
    assert "ARTSWEEP_MLFLOW_SECRETS=~/.artsweep-head/mlflow.env" in tracking
    assert "ARTSWEEP_MLFLOW_DIR=~/.artsweep-head/" in tracking  # its ini holds a password: never in the synced folder


@pytest.mark.unit
def test_security_group_admits_ssh_only_from_the_users_cidr():
    provider = load("gpu.yaml")["provider"]
    group = provider["security_group"]
    (rule,) = group["IpPermissions"]
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 22, 22)
    (cidr,) = [r["CidrIp"] for r in rule["IpRanges"]]
    assert cidr == "YOUR.PUBLIC.IP.ADDRESS/32" and "Ipv6Ranges" not in rule  # a placeholder EC2 refuses until set
    assert f"--group-name {group['GroupName']}" in (CLUSTER / "aws" / "setup.sh").read_text()  # made before ray up
    assert provider["use_internal_ips"] is True
    for node_type in load("gpu.yaml")["available_node_types"].values():
        assert "SecurityGroupIds" not in node_type["node_config"]  # the named group, nothing else


@pytest.mark.unit
def test_imdsv2_with_hop_limit_1_on_every_node_type():
    for name, node_type in load("gpu.yaml")["available_node_types"].items():
        options = node_type["node_config"]["MetadataOptions"]
        assert options == {"HttpTokens": "required", "HttpPutResponseHopLimit": 1}, name


@pytest.mark.unit
def test_head_and_workers_get_their_own_scoped_instance_profiles():
    config = load("gpu.yaml")
    types = config["available_node_types"]
    arns = {name: t["node_config"]["IamInstanceProfile"]["Arn"] for name, t in types.items()}
    assert arns["head"].endswith("instance-profile/artsweep-head")
    assert arns["gpu_worker"].endswith("instance-profile/artsweep-worker")
    head, worker = policy("head-policy.json"), policy("worker-policy.json")
    # workers: S3 only, objects under the study prefix (checkpoints and the decode cache of --storage) and, read
    # only, under data/ (a --data in the bucket: a node that cannot download the decode cache builds it)
    assert all(a.startswith("s3:") for s in worker for a in _list(s["Action"]))
    objects = {r: _list(s["Action"]) for s in worker for r in _list(s["Resource"]) if "/" in r.split(":::")[1]}
    assert list(objects) == ["arn:aws:s3:::YOUR-BUCKET/artsweep/*", "arn:aws:s3:::YOUR-BUCKET/data/*"]
    assert objects["arn:aws:s3:::YOUR-BUCKET/data/*"] == ["s3:GetObject"]
    assert "--storage s3://YOUR-BUCKET/artsweep" in (CLUSTER / "gpu.yaml").read_text()
    # the head: launches only this cluster's worker type, tagged with the cluster's name; ends only those
    launch = next(s for s in head if s["Action"] == "ec2:RunInstances" and s["Resource"].endswith(":instance/*"))
    assert launch["Condition"]["StringEquals"] == {
        "aws:RequestTag/ray-cluster-name": config["cluster_name"],
        "ec2:InstanceType": [types["gpu_worker"]["node_config"]["InstanceType"]],
    }
    end = next(s for s in head if "ec2:TerminateInstances" in _list(s["Action"]))
    assert end["Condition"]["StringEquals"] == {"ec2:ResourceTag/ray-cluster-name": config["cluster_name"]}
    (pass_role,) = [s for s in head if "iam:PassRole" in _list(s["Action"])]
    assert pass_role["Resource"].endswith(":role/artsweep-worker")  # never its own role
    assert not [s for s in head + worker if "*" in _list(s["Action"]) or s["Effect"] != "Allow"]


def _list(value):
    return value if isinstance(value, list) else [value]


RAY_SINGLE_FILE_MOUNTS = ["ray-autoscaler_us-west-2.pem", "id_ed25519", "ray-bootstrap-x1y2", "ray_token", "mlflow.env"]
SECRETS = [".env", ".env.local", "key.pem", "tls.key", "id_rsa", ".aws", "credentials.json", ".mlflow", ".artsweep"]


@pytest.mark.unit
@pytest.mark.parametrize("name", FILES)
def test_rsync_filter_keeps_secrets_out_of_the_synced_checkout(name):
    """rsync_exclude applies to every mount (Ray's key and the secrets mount too): names only; the wide patterns
    sit in .rsync-exclude, which rsync reads in the checkout only. (fnmatch: rsync's matching for these names.)"""
    config = load(name)
    excludes = config["rsync_exclude"]
    filters = [line for line in (ROOT / ".rsync-exclude").read_text().splitlines() if line and line[0] != "#"]
    assert config["rsync_filter"] == [".rsync-exclude"]
    for secret in SECRETS:
        assert any(fnmatch.fnmatch(secret, p) for p in excludes + filters), secret
    for mount in RAY_SINGLE_FILE_MOUNTS:
        assert not any(fnmatch.fnmatch(mount, p) for p in excludes), mount


@pytest.mark.unit
@pytest.mark.parametrize("name", FILES)
def test_every_node_installs_the_repos_pins(name):
    config = load(name)
    assert "cd ~/artsweep && pip install -c constraints.txt -e ." in config["setup_commands"]
    assert "cd ~/artsweep && pip install -c constraints.txt -e '.[server]'" in config["head_setup_commands"]
    pins = dict(
        line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines() if not line.startswith("#")
    )
    for package in ("ray", "torch", "mlflow"):  # made from this environment: regenerate when these move
        assert pins[package] == metadata.version(package).split("+")[0], f"{package}: python cluster/constraints.py"


@pytest.mark.unit
def test_gpu_workers_are_spot_and_scale_to_zero():
    config = load("gpu.yaml")
    worker = config["available_node_types"]["gpu_worker"]
    assert worker["min_workers"] == 0 and worker["resources"]["GPU"] == 1
    assert worker["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    head = config["available_node_types"]["head"]["node_config"]
    assert "InstanceMarketOptions" not in head  # the head (and trial drivers) is on-demand


@pytest.mark.unit
def test_every_key_has_a_comment():
    for name in FILES:
        for line in (CLUSTER / name).read_text().splitlines():
            if re.match(r"^\s*[A-Za-z_]\w*:", line):
                assert "#" in line, f"{name}: no comment on {line.strip()!r}"


@pytest.mark.unit
def test_readme_cluster_commands_match_the_yaml():
    readme = (CLUSTER.parent / "README.md").read_text()
    header = (CLUSTER / "gpu.yaml").read_text().split("cluster_name:")[0]
    for command in (
        "ray up cluster/gpu.yaml",
        "ray dashboard cluster/gpu.yaml",
        "ray attach cluster/gpu.yaml -p 5000",
        "ray job submit --address http://127.0.0.1:8265 --working-dir . --",
        "ray down cluster/gpu.yaml",
    ):
        assert command in readme and command in header, command
    config = load("gpu.yaml")
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])  # hence `ray dashboard`
    assert any("ARTSWEEP_MLFLOW_PORT=5000" in c for c in config["head_start_ray_commands"])  # hence `-p 5000`


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.integration
def test_secrets_are_made_owner_only_and_the_head_keeps_the_tracking_ones(tmp_path, monkeypatch):
    """cluster/secrets.sh on the user's machine, then cluster/head_secrets.sh as the head's setup runs it."""
    secrets = tmp_path / "laptop" / ".artsweep"
    subprocess.run(["bash", CLUSTER / "secrets.sh", secrets], check=True, capture_output=True)
    token = (secrets / "ray_token").read_text()
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    assert (mode(secrets), mode(secrets / "ray_token"), mode(secrets / "mlflow.env")) == (0o700, 0o600, 0o600)
    env = (secrets / "mlflow.env").read_text()
    assert "\n# MLFLOW_BACKEND_STORE_URI=postgresql://" in env  # the user's to fill in
    out = subprocess.run(["bash", CLUSTER / "secrets.sh", secrets], check=True, capture_output=True, text=True)
    assert (secrets / "ray_token").read_text() == token and out.stdout == ""  # made once, never printed
    password = re.search(r"^ARTSWEEP_STUDY_PASSWORD=(.+)$", env, re.M).group(1)
    assert token not in out.stdout + out.stderr and password not in out.stdout

    home = tmp_path / "head"
    synced = home / ".artsweep"
    synced.mkdir(parents=True)
    for f in secrets.iterdir():
        (synced / f.name).write_bytes(f.read_bytes())
    with (synced / "mlflow.env").open("a") as f:
        f.write("ARTSWEEP_STUDY_PASSWORD=pa%ss\n")  # the last line wins, and '%' survives configparser
    out = subprocess.run(
        ["bash", CLUSTER / "head_secrets.sh"], env={**os.environ, "HOME": str(home)}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in synced.iterdir()) == ["ray_token"]  # what a worker will copy from the head
    assert mode(home / ".artsweep-head") == 0o700 and mode(home / ".artsweep-head" / "mlflow.env") == 0o600
    assert mode(home / ".mlflow" / "credentials") == 0o600 and "pa%ss" not in out.stdout
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    creds = read_mlflow_creds()
    assert (creds.username, creds.password) == ("study", "pa%ss")
    again = subprocess.run(
        ["bash", CLUSTER / "head_secrets.sh", tmp_path / "none", home / ".artsweep-head"],
        env={**os.environ, "HOME": str(home)},
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0  # a `ray up` that synced nothing new keeps the head's copy
