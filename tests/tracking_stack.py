"""The cluster head's tracking stack, real and on loopback, for the tests and benchmarks/tracking_load.py:

- `Postgres`: a real PostgreSQL server (Debian's `postgresql`, tests/install_services.sh installs it) in a
  temporary cluster made by initdb, password auth (scram) on 127.0.0.1 and a unix socket in its own folder;
- `S3`: moto's server mode, the S3 REST API on 127.0.0.1, with one bucket. It STANDS IN FOR AMAZON S3: the same
  API and client code (boto3, MLflow's S3 artifact repository), but in memory and with no real credentials;
- `TrackingServer`: cluster/mlflow_server.sh, the head's own start script, run against them with a secrets
  file of its own (what ~/.artsweep/mlflow.env is on the head).

Everything stops (and its folders go) when its `stop()` runs or its `with` block ends.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import boto3

from tests.servers import BIN, wait_http
from trainables.net import free_port

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "cluster" / "mlflow_server.sh"
# moto accepts any key; these only keep boto3 from looking for real ones
S3_KEYS = {"AWS_ACCESS_KEY_ID": "stand-in", "AWS_SECRET_ACCESS_KEY": "stand-in", "AWS_DEFAULT_REGION": "us-east-1"}


def pg_bin() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<newest>/bin; None without."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(os.path.realpath(on_path)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


class Postgres:
    """A PostgreSQL server of its own in a temporary folder. As root it runs as the `postgres` user (initdb and
    the server refuse root), in a folder that user owns."""

    def __init__(self):
        self.bin = pg_bin()
        if self.bin is None:
            raise RuntimeError("no PostgreSQL (initdb, pg_ctl): run tests/install_services.sh")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="artsweep-pg-"))  # short: a socket path has <= 107 characters
        self.data, self.socket = self.root / "data", self.root / "socket"
        self.owner = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    def _run(self, *cmd: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> "Postgres":
        self.socket.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.socket, "postgres")
        # trust only on the owner's private socket (setup); every TCP login needs its password
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.owner,
            "-A",
            "scram-sha-256",
            "--auth-local=trust",
            "-E",
            "UTF8",
        )
        options = f"-p {self.port} -k {self.socket} -h 127.0.0.1 -c max_connections=200 -c fsync=off"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "pg.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def connect(self, database: str = "postgres", user: str | None = None, password: str | None = None):
        """psycopg2 connection: over the socket as the superuser, or over TCP as `user` with `password`."""
        import psycopg2

        if user is None:
            conn = psycopg2.connect(host=str(self.socket), port=self.port, user=self.owner, dbname=database)
        else:
            conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=user, password=password, dbname=database)
        conn.autocommit = True
        return conn

    def create_database(self, name: str, user: str, password: str) -> str:
        """A database owned by `user` (created with `password` if new); returns its postgresql:// URI."""
        with closing(self.connect()) as conn, conn.cursor() as cur:  # `with conn` would open a transaction
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE ROLE "{user}" LOGIN PASSWORD %s', (password,))
            cur.execute(f'CREATE DATABASE "{name}" OWNER "{user}"')
        return f"postgresql://{user}:{quote(password, safe='')}@127.0.0.1:{self.port}/{name}"

    def dump(self, database: str) -> bytes:
        """Every table of `database` as SQL text (pg_dump over the owner's socket)."""
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        cmd = [*prefix, str(self.bin / "pg_dump"), "-h", str(self.socket), "-p", str(self.port), "-U", self.owner]
        return subprocess.run([*cmd, database], check=True, capture_output=True, timeout=120).stdout

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


class S3:
    """moto's S3 server on 127.0.0.1 (a stand-in for S3, see the module's docstring) with bucket `bucket`."""

    def __init__(self, work: Path, bucket: str = "artsweep-study"):
        self.work, self.bucket, self.port, self.proc = Path(work), bucket, free_port(), None
        self.endpoint = f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What a process that reaches the bucket needs (the head's instance profile, in the cloud)."""
        return {**S3_KEYS, "MLFLOW_S3_ENDPOINT_URL": self.endpoint}

    def start(self) -> "S3":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=open(self.work / "moto.log", "a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_http(f"{self.endpoint}/moto-api/", timeout=60)
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            **{k.lower(): v for k, v in S3_KEYS.items() if "KEY" in k},
            region_name=S3_KEYS["AWS_DEFAULT_REGION"],
        )

    def upload(self, folder: Path, prefix: str = "", bucket: str | None = None) -> list[str]:
        """Every file under `folder` to s3://<bucket, default ours>/<prefix/><its relative path> (a new bucket is
        created); the keys."""
        client, keys, bucket = self.client(), [], bucket or self.bucket
        if bucket != self.bucket:
            client.create_bucket(Bucket=bucket)
        for f in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            keys.append(f"{prefix}/{f.relative_to(folder).as_posix()}".lstrip("/"))
            client.upload_file(str(f), bucket, keys[-1])
        return keys

    def user(self, name: str, actions: list[str]) -> dict[str, str]:
        """An IAM user allowed `actions` (e.g. ["s3:ListBucket"]) on everything; the environment that calls as it."""
        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint,
            region_name=S3_KEYS["AWS_DEFAULT_REGION"],
            **{k.lower(): v for k, v in S3_KEYS.items() if "KEY" in k},
        )
        iam.create_user(UserName=name)
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
        iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return {
            **self.data_env,
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }

    def enforce_auth(self) -> None:
        """From now on every request needs the keys of a user (user()) whose policy allows it: moto's IAM checks,
        off by default, on through its API (the server's INITIAL_NO_AUTH_ACTION_COUNT set to 0)."""
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
        )
        urllib.request.urlopen(request, timeout=10).close()

    @property
    def data_env(self) -> dict[str, str]:
        """What a process that reads --data or the study's storage here needs: pyarrow and boto3 take the endpoint
        from AWS_ENDPOINT_URL_S3 (MLflow's artifact store from MLFLOW_S3_ENDPOINT_URL, `env`)."""
        return {**S3_KEYS, "AWS_ENDPOINT_URL_S3": self.endpoint}

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def objects(self, prefix: str = "") -> dict[str, bytes]:
        """{s3://bucket/key: its bytes} under `prefix`."""
        client = self.client()
        return {
            f"s3://{self.bucket}/{k}": client.get_object(Bucket=self.bucket, Key=k)["Body"].read()
            for k in self.keys(prefix)
        }

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


@dataclass
class Secrets:
    """What the head's ~/.artsweep/mlflow.env holds (random passwords, new for every stack)."""

    backend_uri: str
    auth_uri: str
    db_password: str  # in both URIs, URL-encoded
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    flask_key: str = field(default_factory=lambda: secrets.token_hex(32))
    study_user: str = "study"
    study_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))

    def values(self) -> list[str]:
        """Every secret, for checks that none leaked (the databases' password raw and URL-encoded)."""
        return [
            self.admin_password,
            self.flask_key,
            self.study_password,
            self.db_password,
            quote(self.db_password, safe=""),
        ]

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"# written by tests/tracking_stack.py\nMLFLOW_BACKEND_STORE_URI={self.backend_uri}\n"
            f"MLFLOW_AUTH_DATABASE_URI={self.auth_uri}\nMLFLOW_AUTH_ADMIN_PASSWORD={self.admin_password}\n"
            f"MLFLOW_FLASK_SERVER_SECRET_KEY={self.flask_key}\nARTSWEEP_STUDY_USER={self.study_user}\n"
            f"ARTSWEEP_STUDY_PASSWORD={self.study_password}\n"
        )
        path.chmod(0o600)
        return path


class TrackingServer:
    """cluster/mlflow_server.sh started as the head starts it, its folders (secrets file, pid, log, ini) under
    `work`, serving on 127.0.0.1 at a free port."""

    def __init__(self, work: Path, secrets_: Secrets, s3: S3, prefix: str = "mlflow", workers: int = 2):
        self.work, self.secrets, self.s3, self.workers = Path(work), secrets_, s3, workers
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.destination = f"s3://{s3.bucket}/{prefix}"
        self.run_dir = self.work / "mlflow"
        self.secrets_file = self.work / ".artsweep" / "mlflow.env"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.s3.env,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "ARTSWEEP_PYTHON": sys.executable,
            "ARTSWEEP_MLFLOW_SECRETS": str(self.secrets_file),
            "ARTSWEEP_MLFLOW_DIR": str(self.run_dir),
            "ARTSWEEP_MLFLOW_HOST": "127.0.0.1",
            "ARTSWEEP_MLFLOW_PORT": str(self.port),
            "ARTSWEEP_MLFLOW_WORKERS": str(self.workers),
        }

    def script(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(SCRIPT), *args], env=self.env(), capture_output=True, text=True, timeout=timeout
        )

    def start(self) -> "TrackingServer":
        self.secrets.write(self.secrets_file)
        t0 = time.monotonic()
        proc = self.script(self.destination)
        if proc.returncode != 0:
            raise RuntimeError(f"cluster/mlflow_server.sh failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        self.start_s = time.monotonic() - t0
        return self

    @property
    def pid(self) -> int:
        return int((self.run_dir / "mlflow.pid").read_text())

    def stop(self) -> None:
        if self.run_dir.is_dir():
            self.script("--stop", timeout=60)

    def admin_env(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": self.secrets.admin_password}

    def study_env(self) -> dict[str, str]:
        return {
            "MLFLOW_TRACKING_USERNAME": self.secrets.study_user,
            "MLFLOW_TRACKING_PASSWORD": self.secrets.study_password,
        }


@dataclass
class Stack:
    postgres: Postgres
    s3: S3
    secrets: Secrets

    def server(self, work: Path, workers: int = 2) -> TrackingServer:
        """A server (not started) on this stack's database and bucket, its folders under `work`."""
        return TrackingServer(work, self.secrets, self.s3, workers=workers)


@contextmanager
def tracking_stack(work: Path):
    """PostgreSQL with two databases (tracking, users) and the S3 stand-in with a bucket; stopped at the end."""
    work = Path(work)
    pg, s3 = Postgres(), S3(work)
    try:
        pg.start()
        password = secrets.token_urlsafe(12) + "@/%"  # characters a URI must encode, as real passwords have
        backend = pg.create_database("mlflow", "mlflow", password)
        auth = pg.create_database("mlflow_auth", "mlflow", password)
        s3.start()
        yield Stack(pg, s3, Secrets(backend, auth, password))
    finally:
        s3.stop()
        pg.stop()
