#!/usr/bin/env bash
# Sketch: set up the coordinator (Debian/Ubuntu, systemd). Read it before running it as root.
# Runs: Postgres (metadata + results DB), Redis (AOF), api-server, scheduler, dag-processor,
# triggerer and the `default` Celery worker. Re-running is safe.
#   sudo VALUES=/etc/earmark/values.env ./deploy/setup-coordinator.sh
set -euo pipefail
PROJECT=${PROJECT:-/opt/earmark}
VALUES=${VALUES:-/etc/earmark/values.env}
[ -f "$VALUES" ] || { echo "copy deploy/values.env to $VALUES and fill it in" >&2; exit 1; }
set -a
# shellcheck source=/dev/null
. "$VALUES"
set +a

apt-get install -y postgresql redis-server python3.11 python3.11-venv
id earmark >/dev/null 2>&1 || useradd --system --create-home --home-dir /var/lib/earmark earmark
install -d -o earmark -g earmark "$AIRFLOW_HOME" /etc/earmark

# Code and pinned environment (same commit and versions on every host).
make -C "$PROJECT" venv

# Postgres: one role and one database each for Airflow metadata and Earmark results.
# Passwords: the ones in AIRFLOW_METADATA_DB_URL / EARMARK_RESULTS_DB_URI.
sudo -u postgres psql -v ON_ERROR_STOP=1 <<SQL
SELECT 'CREATE ROLE airflow LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname='airflow')\gexec
SELECT 'CREATE ROLE earmark LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname='earmark')\gexec
SELECT 'CREATE DATABASE airflow OWNER airflow' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname='airflow')\gexec
SELECT 'CREATE DATABASE earmark OWNER earmark' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname='earmark')\gexec
SQL
echo "set the roles' passwords (\\password airflow, \\password earmark) and allow the worker"
echo "hosts in pg_hba.conf (scram-sha-256) before starting the workers"

# Redis: the broker, with AOF (appendfsync everysec) so queued tasks survive a restart.
install -m 640 -o redis -g redis "$PROJECT/deploy/redis/earmark-redis.conf" /etc/redis/earmark-redis.conf
grep -q earmark-redis.conf /etc/redis/redis.conf || echo "include /etc/redis/earmark-redis.conf" >> /etc/redis/redis.conf
systemctl restart redis-server

# The shared configuration. Copy THIS file to every worker host (same secrets everywhere).
"$PROJECT/.venv/bin/earmark" render-config --values "$VALUES" --out /etc/earmark/airflow.env
chown root:earmark /etc/earmark/airflow.env

# Airflow metadata schema and the gpu pool (= the sum of the GPU workers' concurrency).
sudo -u earmark bash -c "set -a; . /etc/earmark/airflow.env; set +a
  $PROJECT/.venv/bin/airflow db migrate
  $PROJECT/.venv/bin/airflow pools set gpu $((EARMARK_GPU_SLOTS * EARMARK_GPU_VMS)) 'GPU slots (sum of gpu worker concurrency)'"

install -m 644 "$PROJECT"/deploy/systemd/earmark.target \
  "$PROJECT"/deploy/systemd/earmark-{api-server,scheduler,dag-processor,triggerer,worker-default,metrics,backup}.service \
  "$PROJECT"/deploy/systemd/earmark-backup.timer \
  /etc/systemd/system/
# Daily pg_dump of the results DB (deploy/backup-results.sh), kept 14 days: private to earmark.
install -d -m 700 -o earmark -g earmark /var/backups/earmark
systemctl daemon-reload
systemctl enable --now earmark.target earmark-api-server earmark-scheduler earmark-dag-processor \
  earmark-triggerer earmark-worker-default earmark-metrics earmark-backup.timer
systemctl --no-pager status 'earmark-*' | grep -E '^(●|   Active)'
