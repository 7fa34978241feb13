#!/usr/bin/env bash
# Fetch htmx from the npm registry into frontend/static/vendor (not committed: it is a dependency).
set -euo pipefail
version="$1"; dest="$2"
if ! command -v npm >/dev/null 2>&1; then
  echo "[siyu] WARNING: npm is not installed, so htmx could not be fetched; pages still work as plain forms." >&2
  echo "[siyu]          Install Node.js/npm and run 'make install' again for live validation and partial updates." >&2
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "[siyu] fetching htmx ${version} (npm)…"
(cd "$tmp" && npm pack "htmx.org@${version}" --silent >/dev/null)
tar -xzf "$tmp"/htmx.org-"${version}".tgz -C "$tmp"
mkdir -p "$(dirname "$dest")"
cp "$tmp/package/dist/htmx.min.js" "$dest"
