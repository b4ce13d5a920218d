#!/usr/bin/env bash
# Offline validation of the AWS deployment (deploy/aws/template.yaml), no AWS account needed:
#   1. sam validate, and sam validate --lint        (aws-sam-cli: the SAM translator, cfn-lint)
#   2. the SAM transform to the expanded CloudFormation template (expand.py, aws-sam-translator)
#   3. cfn-lint on the expanded template: any error or warning fails
#   4. the policy test on the expanded template (test_policy.py)
# The tools come from PyPI at the versions pinned in requirements.txt, into a venv kept under
# ~/.cache (reused while requirements.txt is unchanged; CASHFLOW_AWS_VENV overrides the place).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

# No credentials, a dummy region, no instance-metadata probe, no telemetry: nothing leaves the box.
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true SAM_CLI_TELEMETRY=0
unset AWS_PROFILE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN

pins="$(sha256sum "$here/requirements.txt" | cut -c1-12)"
venv="${CASHFLOW_AWS_VENV:-$HOME/.cache/cashflow/aws-venv-$pins}"
if [[ ! -f "$venv/.installed" ]]; then
  echo "== installing the pinned tools into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  touch "$venv/.installed"
fi
py="$venv/bin/python"

template="$here/template.yaml"
expanded="$root/target/aws/template.expanded.json"

echo "== sam validate"
"$venv/bin/sam" validate --template "$template"
echo "== sam validate --lint"
"$venv/bin/sam" validate --lint --template "$template"

echo "== SAM transform -> $expanded"
"$py" "$here/expand.py" "$template" "$expanded"

echo "== cfn-lint (expanded template)"
"$venv/bin/cfn-lint" --format parseable "$expanded"
echo "cfn-lint: 0 errors, 0 warnings"

echo "== policy test (expanded template)"
CASHFLOW_EXPANDED_TEMPLATE="$expanded" "$py" -m unittest discover -s "$here" -p 'test_policy.py' -v
