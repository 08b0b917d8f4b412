#!/usr/bin/env bash
# Set up a worker VM (Debian/Ubuntu, systemd).
#   sudo deploy/setup-worker.sh transfer [--dry-run]   # transfer VM: queue transfer
#   sudo deploy/setup-worker.sh gpu [--dry-run]        # GPU VM: queues unpack and gpu (one worker per GPU)
# Needs $ETC/airflow.env copied from the coordinator (the same file on every host), the data
# volume mounted at EARMARK_DATA_ROOT and, on GPU VMs, the models. Idempotent; --dry-run prints
# every action and does none. Environment: ETC (/etc/earmark), PROJECT (/opt/earmark),
# GPUS (default: nvidia-smi -L).
set -euo pipefail

usage() {
    sed -n '2,8s/^# \{0,1\}//p' "$0"
    exit "${1:-0}"
}

role=""
dry_run=false
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=true ;;
        -h | --help) usage 0 ;;
        transfer | gpu) role=$1 ;;
        *) echo "setup-worker: unknown argument $1 (a role: transfer|gpu)" >&2; usage 2 ;;
    esac
    shift
done
[ -n "$role" ] || { echo "setup-worker: which role? transfer|gpu" >&2; usage 2; }

ETC=${ETC:-/etc/earmark}
PROJECT=${PROJECT:-/opt/earmark}
die() { echo "setup-worker: $*" >&2; exit 1; }
step() { echo "== $*"; }
run() {
    echo "+ $*"
    if ! $dry_run; then "$@"; fi
}
# A prerequisite: checked for real, or in a dry run printed as what would be checked.
check() {
    local what=$1
    shift
    if $dry_run; then
        echo "+ $*    # else: $what"
    elif ! "$@" >/dev/null 2>&1; then
        die "$what"
    fi
}

step "prerequisites"
[ -f "$ETC/airflow.env" ] || die "no $ETC/airflow.env: copy airflow.env from the coordinator (scp coordinator:/etc/earmark/airflow.env $ETC/)"
set -a
# shellcheck source=/dev/null
. "$ETC/airflow.env"
set +a
$dry_run || [ "$(id -u)" -eq 0 ] || die "run as root (sudo)"
for tool in systemctl apt-get runuser curl; do
    $dry_run || command -v "$tool" >/dev/null 2>&1 || die "$tool is missing: this script sets up a Debian/Ubuntu host with systemd"
done
check "mount the data volume at $EARMARK_DATA_ROOT" mountpoint -q "$EARMARK_DATA_ROOT"
# Workers run tasks through the api-server's execution API, and take them from the broker.
api=${AIRFLOW__CORE__EXECUTION_API_SERVER_URL%/execution/}
check "the api-server at $api is not reachable from here" curl -fsS "$api/api/v2/monitor/health"

step "packages, the earmark user, the pinned environment"
run apt-get install -y -qq python3.11 python3.11-venv curl
if id earmark >/dev/null 2>&1; then echo "   unchanged: user earmark"; else run useradd --system --create-home --home-dir /var/lib/earmark earmark; fi
run install -d -o earmark -g earmark "$AIRFLOW_HOME"
run make -C "$PROJECT" venv # same commit and pinned versions as the coordinator

units=()
case "$role" in
    transfer)
        units=(earmark-worker-transfer.service) ;;
    gpu)
        step "models: the adapter merged into the base once per host"
        for dir in "$EARMARK_ASR_MODEL_DIR" "$EARMARK_BASE_MODEL_DIR" "$EARMARK_ADAPTER_DIR"; do
            check "missing model directory $dir" test -d "$dir"
        done
        run install -d -o earmark -g earmark "$(dirname "$EARMARK_PREPARED_MODEL_DIR")"
        if $dry_run; then
            echo "+ runuser -u earmark -- $PROJECT/.venv/bin/earmark models check || … earmark models prepare"
        elif ! runuser -u earmark -- "$PROJECT/.venv/bin/earmark" models check; then
            run runuser -u earmark -- "$PROJECT/.venv/bin/earmark" models prepare
        fi
        gpus=${GPUS:-}
        if [ -z "$gpus" ]; then
            command -v nvidia-smi >/dev/null 2>&1 || die "nvidia-smi is missing: install the NVIDIA driver (or set GPUS)"
            gpus=$(nvidia-smi -L | wc -l)
        fi
        [ "$gpus" -ge 1 ] || die "no GPU found (nvidia-smi -L lists none)"
        echo "   $gpus GPU workers: the coordinator's gpu pool and EARMARK_GPU_SLOTS count them"
        units=(earmark-worker-unpack.service)
        for ((i = 0; i < gpus; i++)); do units+=("earmark-worker-gpu@$i.service"); done ;;
esac

step "units: ${units[*]}"
run install -m 644 "$PROJECT/deploy/systemd/earmark.target" /etc/systemd/system/
installed=" "
for unit in "${units[@]}"; do
    file=${unit/@*./@.} # earmark-worker-gpu@3.service -> earmark-worker-gpu@.service
    [[ $installed == *" $file "* ]] && continue
    run install -m 644 "$PROJECT/deploy/systemd/$file" /etc/systemd/system/
    installed+="$file "
done
run systemctl daemon-reload
run systemctl enable --now earmark.target "${units[@]}"
echo "setup-worker: done$($dry_run && echo ' (dry run: nothing was changed)')"
