#!/usr/bin/env bash
# Debian packages the tests use: headless Chromium and its WebDriver (the RA review UI's browser
# test), espeak-ng (real speech for the voice-activity tests), shellcheck (the deploy scripts)
# and the PostgreSQL client (pg_dump, pg_restore, psql: the backup round trip). Idempotent: does
# nothing when all are installed.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 \
    && command -v espeak-ng >/dev/null 2>&1 && command -v shellcheck >/dev/null 2>&1 \
    && command -v pg_dump >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver fonts-dejavu-core espeak-ng shellcheck postgresql-client >/dev/null
chromium --version 2>/dev/null
espeak-ng --version 2>/dev/null
