#!/usr/bin/env bash
# Builds the five Lambda functions (crates/lambda's binaries) into target/lambda/<name>/bootstrap,
# the CodeUri of each function in template.yaml, and zips each one for the size figure.
#   deploy/aws/build.sh            # x86_64 (what CI builds)
#   deploy/aws/build.sh --arm64    # the template's default Architecture (needs the target installed)
set -euo pipefail
cd "$(dirname "$0")/../.."
arch="${1:---x86-64}"
# The `lambda` profile (Cargo.toml): release without debug information or symbols, so each zip
# stays under 10 MB. The zips first (the size figure), then the bare bootstraps sam deploy zips itself; the
# second run only repackages.
cargo lambda build --profile lambda "$arch" -p cashflow-lambda --output-format zip
cargo lambda build --profile lambda "$arch" -p cashflow-lambda
for function in ledger-api reports-api consumer outbox-sweep admin; do
    ls -l "target/lambda/$function/bootstrap.zip"
done
