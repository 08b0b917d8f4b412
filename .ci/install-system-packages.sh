#!/usr/bin/env bash
# Debian packages the tests use: headless Chromium and its WebDriver (the RA review UI's browser
# test), espeak-ng (real speech for the voice-activity tests), shellcheck (the deploy scripts),
# the PostgreSQL server and client (a throwaway cluster when no server runs; pg_dump,
# pg_restore, psql for the backup round trip) and redis-server (a private broker for the
# harness and the broker tests). Idempotent: does nothing when all are installed.
set -euo pipefail
have_postgres_server() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1; }
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 \
    && command -v espeak-ng >/dev/null 2>&1 && command -v shellcheck >/dev/null 2>&1 \
    && command -v pg_dump >/dev/null 2>&1 && have_postgres_server \
    && command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver fonts-dejavu-core espeak-ng shellcheck postgresql-client \
    postgresql redis-server >/dev/null
chromium --version 2>/dev/null
espeak-ng --version 2>/dev/null
