#!/usr/bin/env bash
# Fetch Swagger UI (swagger-ui-dist) from the npm registry into frontend/static/vendor/swagger-ui (not committed:
# it is a dependency). /schema serves it; without it, /schema links the OpenAPI document instead.
set -euo pipefail
version="$1"; dest="$2"
if ! command -v npm >/dev/null 2>&1; then
  echo "[siyu] WARNING: npm is not installed, so the API viewer (/schema) could not be fetched;" >&2
  echo "[siyu]          the OpenAPI document is still served at /schema/openapi.json." >&2
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "[siyu] fetching swagger-ui-dist ${version} (npm)…"
(cd "$tmp" && npm pack "swagger-ui-dist@${version}" --silent >/dev/null)
tar -xzf "$tmp"/swagger-ui-dist-"${version}".tgz -C "$tmp"
mkdir -p "$dest"
cp "$tmp/package/swagger-ui-bundle.js" "$tmp/package/swagger-ui.css" "$tmp/package/LICENSE" "$dest/"
