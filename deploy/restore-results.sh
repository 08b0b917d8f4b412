#!/usr/bin/env bash
# Restore the results DB from a dump written by backup-results.sh.
#   sudo systemctl stop earmark.target           # nothing may write while it restores
#   sudo -u earmark deploy/restore-results.sh [--dry-run] --yes DUMP
#   sudo systemctl start earmark.target
# The target is EARMARK_BACKUP_DB_URL, else AIRFLOW_CONN_EARMARK_DB; the database must exist
# (setup-coordinator.sh creates it; after losing it: CREATE DATABASE earmark OWNER earmark).
# The dump's NAME.sha256 is checked first. Everything in the database is replaced by the dump,
# in one transaction: on any error nothing changes. --yes is required (it replaces data).
set -euo pipefail

usage() {
    sed -n '2,9s/^# \{0,1\}//p' "$0"
    exit "${1:-0}"
}

dry_run=false
yes=false
dump=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=true ;;
        --yes) yes=true ;;
        -h | --help) usage 0 ;;
        -*) echo "restore-results: unknown option $1" >&2; usage 2 ;;
        *) [ -z "$dump" ] || { echo "restore-results: one dump only" >&2; usage 2; }; dump=$1 ;;
    esac
    shift
done

die() { echo "restore-results: $*" >&2; exit 1; }
run() {
    echo "+ $*"
    if ! $dry_run; then "$@"; fi
}

[ -n "$dump" ] || die "which dump? (ls /var/backups/earmark)"
[ -f "$dump" ] || die "no such dump: $dump"
[ -f "$dump.sha256" ] || die "no checksum beside the dump: $dump.sha256"
db_url=${EARMARK_BACKUP_DB_URL:-${AIRFLOW_CONN_EARMARK_DB:-}}
[ -n "$db_url" ] || die "no database: set EARMARK_BACKUP_DB_URL or AIRFLOW_CONN_EARMARK_DB (load /etc/earmark/airflow.env)"
# The password goes to libpq through the environment, never on a command line or in the log.
if [[ $db_url =~ ^([a-z+]+://[^:/@]+):([^@]*)@(.*)$ ]]; then
    export PGPASSWORD=${BASH_REMATCH[2]}
    db_url="${BASH_REMATCH[1]}@${BASH_REMATCH[3]}"
fi
for tool in pg_restore psql sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (apt-get install postgresql-client coreutils)"
done
$yes || $dry_run || die "this replaces everything in the results DB with the dump: add --yes"

(cd "$(dirname "$dump")" && sha256sum --check --quiet "$(basename "$dump").sha256") \
    || die "checksum mismatch: $dump is not the file the backup wrote"
pg_restore --list "$dump" >/dev/null || die "unreadable dump: $dump"
psql --dbname="$db_url" --no-psqlrc --quiet --tuples-only --command='SELECT 1' >/dev/null \
    || die "cannot connect to the target database"
echo "restoring $dump into the results DB"
run pg_restore --clean --if-exists --no-owner --single-transaction --exit-on-error \
    --dbname="$db_url" "$dump"
if ! $dry_run; then
    version=$(psql --dbname="$db_url" --no-psqlrc --tuples-only --no-align \
        --command='SELECT max(version) FROM schema_migrations')
    echo "restore-results: done; schema at $version (earmark migrate applies any newer migrations)"
fi
