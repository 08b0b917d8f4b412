#!/usr/bin/env bash
# Back up the results DB (transcripts, labels, review decisions and their audit trail) with
# pg_dump, keep the last EARMARK_BACKUP_KEEP_DAYS days of dumps. Run daily by
# earmark-backup.timer on the coordinator; by hand:
#   sudo -u earmark deploy/backup-results.sh [--dry-run] [--dir DIR] [--keep-days N]
# The database is EARMARK_BACKUP_DB_URL, else AIRFLOW_CONN_EARMARK_DB (the results connection
# of /etc/earmark/airflow.env, loaded by the unit). Each dump is written to a .partial file,
# checked with pg_restore --list, renamed, and given a NAME.sha256 beside it; a failed run
# leaves no dump behind and exits non-zero. Old dumps are pruned only after a new one is good,
# and the newest is never pruned.
set -euo pipefail

usage() {
    sed -n '2,11s/^# \{0,1\}//p' "$0"
    exit "${1:-0}"
}

dry_run=false
dir=${EARMARK_BACKUP_DIR:-/var/backups/earmark}
keep_days=${EARMARK_BACKUP_KEEP_DAYS:-14}
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=true ;;
        --dir) dir=${2:?--dir needs a directory}; shift ;;
        --keep-days) keep_days=${2:?--keep-days needs a number}; shift ;;
        -h | --help) usage 0 ;;
        *) echo "backup-results: unknown argument $1" >&2; usage 2 ;;
    esac
    shift
done

die() { echo "backup-results: $*" >&2; exit 1; }
run() {
    echo "+ $*"
    if ! $dry_run; then "$@"; fi
}

db_url=${EARMARK_BACKUP_DB_URL:-${AIRFLOW_CONN_EARMARK_DB:-}}
[ -n "$db_url" ] || die "no database: set EARMARK_BACKUP_DB_URL or AIRFLOW_CONN_EARMARK_DB (load /etc/earmark/airflow.env)"
# The password goes to libpq through the environment, never on a command line or in the log.
if [[ $db_url =~ ^([a-z+]+://[^:/@]+):([^@]*)@(.*)$ ]]; then
    export PGPASSWORD=${BASH_REMATCH[2]}
    db_url="${BASH_REMATCH[1]}@${BASH_REMATCH[3]}"
fi
case "$keep_days" in '' | *[!0-9]*) die "--keep-days must be a whole number of days, got '$keep_days'" ;; esac
[ "$keep_days" -ge 1 ] || die "--keep-days must be at least 1"
for tool in pg_dump pg_restore sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (apt-get install postgresql-client coreutils)"
done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
dump="$dir/earmark-results-$stamp.dump"
echo "backing up the results DB to $dump (keeping $keep_days days)"
run install -d -m 700 "$dir"
$dry_run || trap 'rm -f "$dump.partial"' EXIT # a failed dump leaves nothing behind
run pg_dump --format=custom --compress=6 --no-owner --file="$dump.partial" --dbname="$db_url"
if ! $dry_run; then
    pg_restore --list "$dump.partial" >/dev/null || { rm -f "$dump.partial"; die "the new dump is unreadable; nothing kept"; }
fi
run mv "$dump.partial" "$dump"
trap - EXIT
if $dry_run; then
    echo "+ sha256sum $dump > $dump.sha256"
else
    (cd "$dir" && sha256sum "$(basename "$dump")" > "$(basename "$dump").sha256")
fi

# Prune: dumps older than keep_days, never the one just written.
while IFS= read -r old; do
    [ "$old" = "$dump" ] && continue
    run rm -f "$old" "$old.sha256"
done < <(find "$dir" -maxdepth 1 -name 'earmark-results-*.dump' -mtime "+$((keep_days - 1))" 2>/dev/null | sort)
if ! $dry_run; then
    echo "backup-results: wrote $dump ($(stat -c %s "$dump") bytes)"
fi
