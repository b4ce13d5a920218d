#!/usr/bin/env bash
# Builds the six Lambda functions (crates/lambda's binaries) into target/lambda/<name>/bootstrap,
# the CodeUri of each function in template.yaml; `sam deploy` zips each directory.
#   deploy/aws/build.sh            # x86_64 (what CI builds)
#   deploy/aws/build.sh --arm64    # the template's default Architecture (needs the target installed)
set -euo pipefail
cd "$(dirname "$0")/../.."
arch="${1:---x86-64}"
# The `lambda` profile (Cargo.toml): release built for size (fat LTO, one codegen unit,
# opt-level "s", no debug information or symbols), so each zip stays under 10 MB; about 20
# minutes on 2 cores. Only the bare bootstraps: a bootstrap.zip left in a CodeUri directory (by
# `--output-format zip`) would be zipped into the package too, doubling it.
cargo lambda build --profile lambda "$arch" -p cashflow-lambda
for function in ledger-api reports-api web consumer outbox-sweep admin; do
    rm -f "target/lambda/$function/bootstrap.zip"
    ls -l "target/lambda/$function/bootstrap"
done
