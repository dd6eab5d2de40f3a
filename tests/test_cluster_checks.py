"""A multi-machine cluster is refused node-local tracking stores and storage; one machine is fine."""
from trainables.cluster import on_network_fs, shared_storage_problems


def test_one_machine_accepts_local_everything():
    assert shared_storage_problems(1, "sqlite:///mlflow.db", "/tmp/ray_results") == []


def test_several_machines_refuse_node_local_stores(tmp_path):
    problems = shared_storage_problems(3, "sqlite:///mlflow.db", str(tmp_path))
    assert len(problems) == 2 and "mlflow server" in problems[0] and "s3://" in problems[1]
    assert shared_storage_problems(3, "http://10.0.0.10:5000", "s3://bucket/artsweep") == []


def test_network_mounts_count_as_shared(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/vda / ext4 rw 0 0\nserver:/export /mnt/shared nfs4 rw 0 0\n")
    assert on_network_fs("/mnt/shared/artsweep", str(mounts))
    assert not on_network_fs("/home/me/artsweep", str(mounts))
    assert not on_network_fs("/mnt/sharedish", str(mounts))
