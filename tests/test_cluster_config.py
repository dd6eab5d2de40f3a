"""Both cluster-launcher configs pass the validation `ray up` itself runs (prepare_config + validate_config),
and the README's cluster commands match what the YAML expects."""

import re
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

pytestmark = pytest.mark.unit

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"


@pytest.mark.parametrize("name", ["gpu.yaml", "local.yaml"])
def test_config_passes_ray_up_validation(name):
    raw = yaml.safe_load((CLUSTER / name).read_text())
    config = prepare_config(raw)
    config.setdefault("cluster_synced_files", [])  # `ray up` adds it before validating
    validate_config(config)
    head_start = " ".join(config["head_start_ray_commands"])
    assert "artsweep_driver" in head_start, "trial drivers must fit on the head (and only there)"
    assert "--dashboard-host=127.0.0.1" in head_start  # no dashboard on the internet
    setup = " ".join(config["setup_commands"])
    assert "pip install -e ." in setup  # the README's install
    assert any("mlflow server" in c for c in config["head_start_ray_commands"])


def test_gpu_workers_are_spot_and_scale_to_zero():
    config = yaml.safe_load((CLUSTER / "gpu.yaml").read_text())
    worker = config["available_node_types"]["gpu_worker"]
    assert worker["min_workers"] == 0 and worker["resources"]["GPU"] == 1
    assert worker["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    head = config["available_node_types"]["head"]["node_config"]
    assert "InstanceMarketOptions" not in head  # the head (and trial drivers) is on-demand


def test_every_key_has_a_comment():
    for name in ("gpu.yaml", "local.yaml"):
        for line in (CLUSTER / name).read_text().splitlines():
            if re.match(r"^\s*[A-Za-z_]\w*:", line):
                assert "#" in line, f"{name}: no comment on {line.strip()!r}"


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
    config = yaml.safe_load((CLUSTER / "gpu.yaml").read_text())
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])  # hence `ray dashboard`
    assert any("--port 5000" in c for c in config["head_start_ray_commands"])  # hence `-p 5000`
