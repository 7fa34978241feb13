#!/usr/bin/env bash
# Browser tests drive Debian's chromium through Playwright. Install it when missing and we are root.
set -uo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "[siyu] installing chromium for the browser tests (apt-get)…"
  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); then
    exit 0
  fi
  echo "[siyu] WARNING: apt-get could not install chromium." >&2
fi
echo "" >&2
echo "##################################################################################" >&2
echo "# WARNING: /usr/bin/chromium is missing, so the BROWSER TESTS WILL BE SKIPPED.     #" >&2
echo "# Install it with:  sudo apt-get install chromium   and run 'make test' again.     #" >&2
echo "##################################################################################" >&2
echo "" >&2
exit 0
