#!/usr/bin/env bash
# Fetch Swagger UI (swagger-ui-dist, the npm registry's package, its integrity checked by npm) into
# frontend/static/vendor/swagger-ui (not committed: it is a dependency, like htmx). /schema serves it from there;
# without it, /schema says so and links the OpenAPI document. A marker `.version-<version>` records what is there.
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
rm -rf "$dest"
mkdir -p "$dest"
# The bundle (no separate preset: /schema uses BaseLayout), its stylesheet, and the licence, notice and bundled
# libraries' licences it ships with (Apache-2.0 asks that the NOTICE travel with it).
cp "$tmp/package/swagger-ui-bundle.js" "$tmp/package/swagger-ui.css" "$tmp/package/LICENSE" "$tmp/package/NOTICE" \
   "$tmp/package/swagger-ui-bundle.js.LICENSE.txt" "$dest/"
touch "$dest/.version-${version}"
