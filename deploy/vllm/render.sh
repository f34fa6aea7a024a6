#!/usr/bin/env bash
# Render the vLLM manifests: substitute only the variables named in ENV_FILE, so any
# other `$` text passes through untouched.
#   deploy/vllm/render.sh ENV_FILE MANIFEST... | kubectl apply -f -
set -euo pipefail
if [ "$#" -lt 2 ]; then
  echo "usage: $0 ENV_FILE MANIFEST..." >&2
  exit 2
fi
env_file=$1; shift
set -a
# shellcheck disable=SC1090
. "$env_file"
set +a
vars=$(sed -n 's/^\([A-Z_][A-Z0-9_]*\)=.*/${\1}/p' "$env_file" | tr '\n' ' ')
dir=$(cd "$(dirname "$0")" && pwd)
for manifest in "$@"; do
  [ -f "$manifest" ] || manifest="$dir/$manifest"
  echo "---"
  envsubst "$vars" < "$manifest"
done
