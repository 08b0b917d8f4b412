#!/usr/bin/env bash
# Sketch: set up a worker VM (Debian/Ubuntu, systemd). Read it before running it as root.
#   sudo ./deploy/setup-worker.sh transfer     # transfer VM: queue transfer
#   sudo ./deploy/setup-worker.sh gpu          # GPU VM: queues unpack (CPU) and gpu (one slot per GPU)
# Needs /etc/earmark/airflow.env copied from the coordinator (scp coordinator:/etc/earmark/airflow.env),
# the data volume mounted at EARMARK_DATA_ROOT (a mnt-data.mount unit) and, on GPU VMs, the models.
set -euo pipefail
ROLE=${1:?usage: setup-worker.sh transfer|gpu}
PROJECT=${PROJECT:-/opt/earmark}
[ -f /etc/earmark/airflow.env ] || { echo "copy /etc/earmark/airflow.env from the coordinator" >&2; exit 1; }
set -a
# shellcheck source=/dev/null
. /etc/earmark/airflow.env
set +a

apt-get install -y python3.11 python3.11-venv
id earmark >/dev/null 2>&1 || useradd --system --create-home --home-dir /var/lib/earmark earmark
install -d -o earmark -g earmark "$AIRFLOW_HOME"
make -C "$PROJECT" venv   # same commit and pinned versions as the coordinator
mountpoint -q "$EARMARK_DATA_ROOT" || { echo "mount the data volume at $EARMARK_DATA_ROOT" >&2; exit 1; }
# The api-server must be reachable (execution API) and the broker too:
curl -fsS "${AIRFLOW__CORE__EXECUTION_API_SERVER_URL%/execution/}/api/v2/monitor/health" >/dev/null

install -m 644 "$PROJECT/deploy/systemd/earmark.target" /etc/systemd/system/
case "$ROLE" in
  transfer)
    units=(earmark-worker-transfer) ;;
  gpu)
    for d in "$EARMARK_ASR_MODEL_DIR" "$EARMARK_BASE_MODEL_DIR" "$EARMARK_ADAPTER_DIR"; do
      [ -d "$d" ] || { echo "missing model directory $d" >&2; exit 1; }
    done
    # The adapter merged into the base once per host; GPU tasks refuse to start without it.
    install -d -o earmark -g earmark "$(dirname "$EARMARK_PREPARED_MODEL_DIR")"
    runuser -u earmark -- "$PROJECT/.venv/bin/earmark" models check \
      || runuser -u earmark -- "$PROJECT/.venv/bin/earmark" models prepare
    gpus=$(nvidia-smi -L | wc -l)
    echo "$gpus GPU workers (earmark-worker-gpu@0..$((gpus - 1))): the coordinator's gpu pool"
    echo "and EARMARK_GPU_SLOTS must be the number of GPUs over all GPU VMs"
    install -m 644 "$PROJECT/deploy/systemd/earmark-worker-gpu@.service" /etc/systemd/system/
    units=(earmark-worker-unpack)
    for ((i = 0; i < gpus; i++)); do units+=("earmark-worker-gpu@$i"); done ;;
  *) echo "unknown role $ROLE" >&2; exit 1 ;;
esac
for u in "${units[@]}"; do
  [[ $u == *@* ]] || install -m 644 "$PROJECT/deploy/systemd/$u.service" /etc/systemd/system/
done
systemctl daemon-reload
systemctl enable --now earmark.target "${units[@]}"
