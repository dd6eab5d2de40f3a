#!/usr/bin/env bash
# The head's setup (cluster/*.yaml head_setup_commands), after `ray up` has synced ~/.artsweep to it:
#  1. moves mlflow.env out of ~/.artsweep into ~/.artsweep-head/ (mode 0700): the head's autoscaler copies
#     ~/.artsweep to every worker it starts, and the tracking server's secrets belong to the head alone;
#  2. writes ~/.mlflow/credentials (0600), which MLflow's client reads, with the study user's name and password:
#     tune.py on the head (`ray job submit`, `ray submit`) records as that user, its password on no command line,
#     in no environment and in no job's runtime_env.
#   bash cluster/head_secrets.sh [SYNCED_DIR [HEAD_DIR]]      # defaults ~/.artsweep ~/.artsweep-head
set -euo pipefail
umask 077
synced=${1:-$HOME/.artsweep}
head=${2:-$HOME/.artsweep-head}

mkdir -p "$head"
chmod 700 "$head"
if [ -f "$synced/mlflow.env" ]; then
    mv -f "$synced/mlflow.env" "$head/mlflow.env"
fi
if [ ! -f "$head/mlflow.env" ]; then
    echo "head_secrets.sh: error: no mlflow.env was synced: run \`bash cluster/secrets.sh\` on your machine, then \`ray up\`" >&2
    exit 1
fi
chmod 600 "$head/mlflow.env"

user='' password=''
while IFS= read -r line || [ -n "$line" ]; do # KEY=VALUE, taken literally (as cluster/mlflow_server.sh reads it)
    line=${line%$'\r'}
    case $line in
    ARTSWEEP_STUDY_USER=*) user=${line#*=} ;;
    ARTSWEEP_STUDY_PASSWORD=*) password=${line#*=} ;;
    esac
done <"$head/mlflow.env"
if [ -z "$user" ] || [ -z "$password" ]; then
    echo "head_secrets.sh: error: $head/mlflow.env has no ARTSWEEP_STUDY_USER or ARTSWEEP_STUDY_PASSWORD line" >&2
    exit 1
fi
mkdir -p "$HOME/.mlflow"
chmod 700 "$HOME/.mlflow"
# configparser reads '%' as interpolation: written '%%'. printf is a builtin: the password shows in no ps listing.
printf '[mlflow]\nmlflow_tracking_username = %s\nmlflow_tracking_password = %s\n' "$user" "${password//%/%%}" \
    >"$HOME/.mlflow/credentials"
chmod 600 "$HOME/.mlflow/credentials"
echo "head_secrets.sh: tracking secrets in $head (0700), the study user's credentials in ~/.mlflow/credentials (0600)"
