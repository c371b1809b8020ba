#!/usr/bin/env bash
# Mints a token through the REST API and prints it (shown once: keep it).
#
#   examples/mint-token.sh publish live/cam1          # a publish token for live/cam1
#   examples/mint-token.sh subscribe 'live/.*' regex  # a subscribe token for every live/ stream
#
# Environment: STREAMGATE_URL (default http://127.0.0.1:8080), STREAMGATE_API_SECRET
# (default: read from ./data/api_secret, where the server writes a generated one).
set -euo pipefail

kind=${1:?usage: mint-token.sh publish|subscribe STREAM [regex]}
stream=${2:?usage: mint-token.sh publish|subscribe STREAM [regex]}
is_regex=false
[ "${3:-}" = regex ] && is_regex=true
url=${STREAMGATE_URL:-http://127.0.0.1:8080}
secret=${STREAMGATE_API_SECRET:-$(cat ./data/api_secret)}

body=$(jq -n --arg s "$stream" --argjson r "$is_regex" \
  '{label: ("example " + $s), streams: [{streamName: $s, isRegex: $r}], expires: 86400}')
curl -fsS -X POST "$url/api/${kind}_token" \
  -H "Authorization: Bearer $secret" -H 'Content-Type: application/json' \
  -d "$body" | jq -r '.data.token'
