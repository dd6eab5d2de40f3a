#!/usr/bin/env bash
# Makes the cluster's secrets once, on your machine, before the first `ray up` (cluster/gpu.yaml, cluster/local.yaml):
#
#   bash cluster/secrets.sh            # writes ~/.artsweep/ (mode 0700); an existing file is never overwritten
#   bash cluster/secrets.sh DIR        # the same into DIR (the tests use a temporary one)
#
#   ray_token    Ray's authentication token (64 hex characters = 256 bits, mode 0600). Every node gets it through
#                the cluster file's file_mounts and starts Ray with RAY_AUTH_MODE=token and this file; your machine's
#                Ray commands (ray job submit, ray status --address ...) need the same two variables:
#                  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=~/.artsweep/ray_token
#                The dashboard's login page (http://localhost:8265 under `ray dashboard`) asks for the token itself:
#                paste the file's contents. A new token: delete the file, rerun this, then `ray up` again.
#   mlflow.env   the tracking server's secrets (mode 0600), read by cluster/mlflow_server.sh on the head only:
#                passwords and the Flask secret key are generated here; the two PostgreSQL URIs are yours to fill in
#                (the lines are commented out until you do, and the server refuses to start without them).
#
# Nothing here is printed: read the files themselves. `ray up` refuses to start while ~/.artsweep is missing.
set -euo pipefail
umask 077

dir=${1:-$HOME/.artsweep}
mkdir -p "$dir"
chmod 700 "$dir"

random_hex() { # $1 bytes of the OS's CSPRNG as hex
    od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'
}

if [ ! -s "$dir/ray_token" ]; then
    random_hex 32 >"$dir/ray_token"
    echo "secrets.sh: wrote the Ray token $dir/ray_token"
fi
chmod 600 "$dir/ray_token"

if [ ! -e "$dir/mlflow.env" ]; then
    cat >"$dir/mlflow.env" <<EOF
# The tracking server's secrets (cluster/mlflow_server.sh reads KEY=VALUE lines literally: no quotes, no \$).
# Fill in the two PostgreSQL URIs (URL-encode a password inside them: @ -> %40) and remove their '#'.
# MLFLOW_BACKEND_STORE_URI=postgresql://USER:PASSWORD@HOST:5432/mlflow
# MLFLOW_AUTH_DATABASE_URI=postgresql://USER:PASSWORD@HOST:5432/mlflow_auth
MLFLOW_AUTH_ADMIN_USERNAME=admin
MLFLOW_AUTH_ADMIN_PASSWORD=$(random_hex 24)
MLFLOW_FLASK_SERVER_SECRET_KEY=$(random_hex 32)
ARTSWEEP_STUDY_USER=study
ARTSWEEP_STUDY_PASSWORD=$(random_hex 24)
EOF
    echo "secrets.sh: wrote $dir/mlflow.env: fill in its two PostgreSQL URIs before \`ray up\`"
fi
chmod 600 "$dir/mlflow.env"
