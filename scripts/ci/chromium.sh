#!/usr/bin/env bash
# Provides the headless browser for the marathon-like web UI test (apps/marathon-like/test/
# ui.browser.test.ts): Debian's `chromium` package, driven by playwright-core. Idempotent: does
# nothing when the binary is already there. The test looks for /usr/bin/chromium (or
# BERTH_CHROMIUM) and, with CI=true, fails when it is missing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if command -v chromium >/dev/null 2>&1; then
  chromium --version 2>/dev/null || true
  exit 0
fi

# Bounded: a stuck mirror must fail the run, not hang it.
timeout 300 apt-get update -qq
timeout 900 apt-get install -y -qq --no-install-recommends chromium fonts-liberation
chromium --version
