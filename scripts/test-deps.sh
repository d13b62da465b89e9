#!/usr/bin/env bash
# Test-only system dependency: Debian's chromium for the Playwright check of `quantgrid ui`
# (never a downloaded browser build). The test fails, never skips, when it is missing.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: installing Debian chromium (apt-get)"
  apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 \
    || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; } \
    || echo "test-deps: could not install chromium; the UI browser test will fail"
else
  echo "test-deps: chromium is missing (install Debian's chromium); the UI browser test will fail"
fi
