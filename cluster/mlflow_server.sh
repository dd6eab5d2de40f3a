#!/usr/bin/env bash
# The studies' tracking server on the cluster head, built to outlive the cluster and to let nobody in unasked:
#
#   bash cluster/mlflow_server.sh s3://YOUR-BUCKET/mlflow     # (re)start it: cluster/gpu.yaml's head start commands
#   bash cluster/mlflow_server.sh --stop                      # stop it
#
# `mlflow server --app-name basic-auth` on port 5000: every request needs a user and password (the study user's,
# or the admin's), a user sees nothing it was not granted (default_permission NO_PERMISSIONS), and Host headers
# other than the head's own addresses are refused (--allowed-hosts). Its records (runs, metrics, the model
# registry) and its users live in PostgreSQL; artifacts (checkpoints, logged models, reports) are proxied by the
# server to the object store given as the argument, so clients need no cloud credentials. Nothing it keeps is on
# the head: `ray down` deletes the head and loses nothing; the next `ray up` runs this again on the same database
# and bucket and serves every study as before.
#
# Which PostgreSQL: a managed instance (Amazon RDS for PostgreSQL, e.g. a db.t4g.micro with 20 GiB,
# automated backups and point-in-time restore included, in the cluster's VPC, its security group open to the
# head's only). Recommended over PostgreSQL on an EBS volume that outlives the head: Ray's autoscaler cannot
# attach an existing volume to a new head (the volume would need its own attach, mount and start scripts pinned
# to one availability zone), nobody would back it up or patch it, and a head killed mid-write leaves a database
# to recover by hand. Either works with this script: it only needs postgresql:// URIs.
#
# Secrets: ~/.artsweep/mlflow.env (or $ARTSWEEP_MLFLOW_SECRETS), owned by this user with mode 0600 (refused
# otherwise), one KEY=VALUE a line (the value is everything after the first '=', taken literally: no quotes, no
# expansion; '#' starts a comment line). It is read here, never sourced; its values reach the server through its
# environment and an owner-only ini file, never a command line (ps shows those) or the log:
#   MLFLOW_BACKEND_STORE_URI=postgresql://USER:PASSWORD@HOST:5432/mlflow       runs, metrics, model registry
#   MLFLOW_AUTH_DATABASE_URI=postgresql://USER:PASSWORD@HOST:5432/mlflow_auth  users and permissions
#   MLFLOW_AUTH_ADMIN_PASSWORD=...          the admin's (>= 12 characters); used when the auth database is new
#   MLFLOW_FLASK_SERVER_SECRET_KEY=...      signs the UI's sessions and CSRF tokens (e.g. `openssl rand -hex 32`)
#   ARTSWEEP_STUDY_USER=study               the user studies run as (MLFLOW_TRACKING_USERNAME on the clients)
#   ARTSWEEP_STUDY_PASSWORD=...             its password (>= 12 characters; MLFLOW_TRACKING_PASSWORD)
#   MLFLOW_AUTH_ADMIN_USERNAME=admin        optional (default admin)
# URL-encode a password inside a URI (e.g. @ -> %40). Both databases must exist (CREATE DATABASE); MLflow creates
# its tables. The admin's password is fixed when the auth database is first used: change it later through the
# update-password API; the study user's is set to the file's on every start (rotate it there, then restart).
#
# The study user is an ordinary user: it may create experiments and registered models and gets MANAGE on what it
# creates (MLflow grants that to a resource's creator), which is all a study does (its experiment, runs, logged
# models, the `<experiment>-classifier` model and its aliases); it sees nothing else. Experiments made by other
# users are closed to it unless an admin grants them (AuthServiceClient.grant_user_permission, in
# mlflow.server.auth.client).
#
# Settings (environment; defaults for the head): ARTSWEEP_MLFLOW_DIR (~/.artsweep/mlflow: pid, log, ini; mode
# 0700), ARTSWEEP_MLFLOW_HOST (0.0.0.0), ARTSWEEP_MLFLOW_PORT (5000), ARTSWEEP_MLFLOW_WORKERS (4 uvicorn workers),
# ARTSWEEP_MLFLOW_ALLOWED_HOSTS (more Host header values to accept, comma-separated, e.g. a DNS name; the head's
# own addresses and localhost are always accepted), ARTSWEEP_MLFLOW_AUTH_CACHE_S (60 s, see AUTH_CACHE_S below),
# ARTSWEEP_MLFLOW_WAIT_S (120 s for the server to answer), ARTSWEEP_PYTHON (python3: the interpreter with
# mlflow, for the health wait and the study user).
# Object store credentials come from the head's instance profile (or the usual AWS_* variables; an S3 stand-in
# is reached with MLFLOW_S3_ENDPOINT_URL).
set -euo pipefail

SECRETS=${ARTSWEEP_MLFLOW_SECRETS:-$HOME/.artsweep/mlflow.env}
RUN_DIR=${ARTSWEEP_MLFLOW_DIR:-$HOME/.artsweep/mlflow}
HOST=${ARTSWEEP_MLFLOW_HOST:-0.0.0.0}
PORT=${ARTSWEEP_MLFLOW_PORT:-5000}
WORKERS=${ARTSWEEP_MLFLOW_WORKERS:-4}
WAIT_S=${ARTSWEEP_MLFLOW_WAIT_S:-120}
# A password check is a scrypt hash (costly by design): uncached, every request pays it, and 3 writers on 2 busy
# cores waited 2.7 s per log_batch (benchmarks/tracking_load.py; cached, 32 writers: p50 0.6 s). Checks that
# passed are cached per worker for this long; a password changed or a user deleted through the API leaves the
# cache at once on the worker that served it, on the others within this time.
AUTH_CACHE_S=${ARTSWEEP_MLFLOW_AUTH_CACHE_S:-60}
PYTHON=${ARTSWEEP_PYTHON:-python3}
PID_FILE=$RUN_DIR/mlflow.pid
LOG=$RUN_DIR/mlflow.log
KEYS=" MLFLOW_BACKEND_STORE_URI MLFLOW_AUTH_DATABASE_URI MLFLOW_AUTH_ADMIN_USERNAME MLFLOW_AUTH_ADMIN_PASSWORD \
MLFLOW_FLASK_SERVER_SECRET_KEY ARTSWEEP_STUDY_USER ARTSWEEP_STUDY_PASSWORD "

die() {
    echo "mlflow_server.sh: error: $*" >&2
    exit 1
}

stop_server() {
    [ -f "$PID_FILE" ] || return 0
    local pid
    pid=$(cat "$PID_FILE")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || true # the whole session: the CLI and its uvicorn workers
        for _ in $(seq 60); do # up to 30 s to finish the requests in flight
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$PID_FILE"
}

read_secrets() {
    [ -f "$SECRETS" ] || die "no secrets file $SECRETS: write it as this script's header says, then chmod 600 it"
    [ "$(stat -c %u "$SECRETS")" = "$(id -u)" ] || die "$SECRETS is not owned by $(id -un): chown it"
    case $(stat -c %a "$SECRETS") in
    600 | 400) ;;
    *) die "$SECRETS is readable by others (mode $(stat -c %a "$SECRETS")): chmod 600 $SECRETS" ;;
    esac
    local line key n=0
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        line=${line%$'\r'}
        case $line in '' | '#'*) continue ;; esac
        key=${line%%=*}
        [ "$key" != "$line" ] && [[ $KEYS == *" $key "* ]] ||
            die "$SECRETS line $n: expected KEY=VALUE with KEY one of$KEYS(got key '${key:0:40}')"
        export "$key=${line#*=}" # literal: no expansion of the value
    done <"$SECRETS"
    for key in MLFLOW_BACKEND_STORE_URI MLFLOW_AUTH_DATABASE_URI MLFLOW_AUTH_ADMIN_PASSWORD \
        MLFLOW_FLASK_SERVER_SECRET_KEY ARTSWEEP_STUDY_USER ARTSWEEP_STUDY_PASSWORD; do
        [ -n "${!key:-}" ] || die "$SECRETS has no $key: add a line $key=..."
    done
    for key in MLFLOW_BACKEND_STORE_URI MLFLOW_AUTH_DATABASE_URI; do
        [[ ${!key} =~ ^postgresql(\+[a-z0-9]+)?:// ]] ||
            die "$key in $SECRETS must be a postgresql:// URI (a store on the head would go with it at ray down)"
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the server extra installs psycopg2-binary
        if [[ ${!key} == postgresql://* ]]; then
            export "$key=postgresql+psycopg2://${!key#postgresql://}"
        fi
    done
}

write_auth_ini() {
    # configparser reads '%' as interpolation: a URL-encoded password's %40 is written %%40
    cat >"$RUN_DIR/basic_auth.ini" <<EOF
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = ${MLFLOW_AUTH_DATABASE_URI//%/%%}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
grant_default_workspace_access = false
auth_cache_ttl_seconds = $AUTH_CACHE_S
EOF
}

allowed_hosts() {
    local hosts="localhost,localhost:$PORT,127.0.0.1,127.0.0.1:$PORT" ip
    for ip in $(hostname -I 2>/dev/null || true); do
        [[ $ip == *:* ]] && ip="[$ip]"
        hosts="$hosts,$ip,$ip:$PORT"
    done
    echo "$hosts${ARTSWEEP_MLFLOW_ALLOWED_HOSTS:+,$ARTSWEEP_MLFLOW_ALLOWED_HOSTS}"
}

start_server() {
    local dest=$1
    # the study user's password is not the server's business; job execution (GenAI huey consumers, ~250 MB
    # each) and telemetry are off
    (
        unset ARTSWEEP_STUDY_PASSWORD
        export MLFLOW_AUTH_CONFIG_PATH=$RUN_DIR/basic_auth.ini MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
            MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
        # database connections per server worker: 64 trials at once exhausted the default 5 + 10 (MLflow then
        # answers 400 "QueuePool limit", benchmarks/scale.py); 4 workers x (15 + 5) = 80 stays under
        # PostgreSQL's default max_connections of 100
        export MLFLOW_SQLALCHEMYSTORE_POOL_SIZE=${MLFLOW_SQLALCHEMYSTORE_POOL_SIZE:-15} \
            MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW=${MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW:-5}
        cd "$RUN_DIR"
        exec setsid mlflow server --app-name basic-auth --host "$HOST" --port "$PORT" --workers "$WORKERS" \
            --artifacts-destination "$dest" --allowed-hosts "$(allowed_hosts)" </dev/null >>"$LOG" 2>&1
    ) &
    echo $! >"$PID_FILE"
}

# Waits for /health, then creates the study user or sets its password (idempotent). The admin's credentials
# reach this Python through its environment only.
ensure_study_user() {
    MLFLOW_TRACKING_USERNAME=${MLFLOW_AUTH_ADMIN_USERNAME:-admin} MLFLOW_TRACKING_PASSWORD=$MLFLOW_AUTH_ADMIN_PASSWORD \
        PYTHONWARNINGS=ignore "$PYTHON" - "$PORT" "$WAIT_S" "$(cat "$PID_FILE")" <<'PY'
import os, sys, time, urllib.request

from mlflow.exceptions import MlflowException, RestException
from mlflow.server.auth.client import AuthServiceClient

port, wait_s, pid = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
uri, deadline = f"http://127.0.0.1:{port}", time.monotonic() + wait_s
while True:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("mlflow_server.sh: error: the server exited while starting")
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2):
            break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"mlflow_server.sh: error: no answer on {uri}/health after {wait_s:.0f} s")
        time.sleep(0.5)
client, user = AuthServiceClient(uri), os.environ["ARTSWEEP_STUDY_USER"]
password = os.environ["ARTSWEEP_STUDY_PASSWORD"]
try:
    try:
        client.get_user(user)
    except RestException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_user(user, password)
        print(f"mlflow_server.sh: created the study user {user}")
    else:
        client.update_user_password(user, password)
except MlflowException as e:  # the server's answer names no password
    why = (e.message.splitlines() or [""])[0][:200]
    sys.exit(f"mlflow_server.sh: error: cannot set up the study user {user} as the admin: {e.error_code}: {why} "
             "(the admin's password is the one the auth database first started with)")
PY
}

main() {
    case ${1:-} in
    --stop)
        stop_server
        return
        ;;
    '' | -*) die "usage: mlflow_server.sh s3://BUCKET/PREFIX | --stop (where the server keeps artifacts)" ;;
    file:* | /* | .*) die "artifacts at $1 would go with the head: give an object store URI (s3://BUCKET/PREFIX)" ;;
    *://*) ;;
    *) die "expected an object store URI such as s3://BUCKET/PREFIX, got $1" ;;
    esac
    command -v mlflow >/dev/null || die "no mlflow on PATH: pip install -e '.[server]' first"
    read_secrets
    umask 077
    mkdir -p "$RUN_DIR"
    chmod 700 "$RUN_DIR"
    stop_server # a rerun of `ray up` restarts it with the current secrets
    write_auth_ini
    start_server "$1"
    if ! ensure_study_user; then
        echo "mlflow_server.sh: the server's log, $LOG, ends with:" >&2
        tail -n 20 "$LOG" >&2
        stop_server
        exit 1
    fi
    echo "mlflow_server.sh: serving on $HOST:$PORT (pid $(cat "$PID_FILE"), log $LOG), artifacts at $1"
}

main "$@"
