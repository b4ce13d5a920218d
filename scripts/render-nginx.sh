#!/usr/bin/env bash
# Renders deploy/nginx.conf.template: render-nginx.sh RUN_DIR FRONT LEDGER CONSOLIDATOR [RATE] [BURST]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
run_dir=$1 front=$2 ledger=$3 consolidator=$4 rate=${5:-20000} burst=${6:-40000}
mkdir -p "$run_dir"
sed -e "s|@RUN_DIR@|$run_dir|g" -e "s|@FRONT_LISTEN@|$front|g" -e "s|@LEDGER@|$ledger|g" \
    -e "s|@CONSOLIDATOR@|$consolidator|g" -e "s|@RATE@|$rate|g" -e "s|@BURST@|$burst|g" \
    "$here/deploy/nginx.conf.template" > "$run_dir/nginx.conf"
echo "$run_dir/nginx.conf"
