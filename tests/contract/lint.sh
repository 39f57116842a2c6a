#!/usr/bin/env bash
# make openapi-lint: Redocly (recommended) and Spectral (spectral:oas) on the committed spec, then
# TypeScript types generated from it and the README flows (flows.ts) type-checked under --strict.
# The tools are pinned in package.json / package-lock.json and installed here by `npm ci`.
set -euo pipefail
cd "$(dirname "$0")"
SPEC=../../openapi/openapi.json
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true NO_UPDATE_NOTIFIER=1

# npm ci only when node_modules is missing or older than the lock file.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --ignore-scripts --no-audit --no-fund
fi

echo "== Redocly (recommended)"
npx --no -- redocly lint --config ../../redocly.yaml --format stylish "$SPEC"
echo "== Spectral (spectral:oas)"
npx --no -- spectral lint --ruleset ../../.spectral.yaml --fail-severity error "$SPEC"
echo "== openapi-typescript -> generated/openapi.d.ts"
npx --no -- openapi-typescript "$SPEC" --output generated/openapi.d.ts
echo "== tsc --strict on flows.ts"
npx --no -- tsc --project tsconfig.json
echo "openapi-lint: ok"
