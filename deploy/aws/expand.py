"""The SAM transform, run offline: template.yaml -> the CloudFormation template AWS would deploy.

Why not `sam validate` alone: it translates and throws the result away. The policy test and
cfn-lint need the expanded template (the functions' roles, the event source mapping, the API's
routes and stage), which is what CloudFormation actually creates.

Local CodeUri directories are replaced by a placeholder S3 location, as `sam validate` does: the
translator accepts only S3 locations, which `sam deploy` substitutes after zipping the directory.
Managed policy names resolve from the map bundled with the translator, and the region is given,
so no AWS call is made.

Usage: python expand.py [TEMPLATE] [OUTPUT.json]
"""

import copy
import json
import sys
from pathlib import Path

import boto3
import yaml
from samtranslator.internal.managed_policies import get_bundled_managed_policy_map
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "template.yaml"
PLACEHOLDER_CODE = {"Bucket": "placeholder-bucket", "Key": "placeholder.zip"}


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref, !Sub, ...) read as their long form."""


def _construct_tag(loader, tag_suffix, node):
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_sam(path: Path = TEMPLATE) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_CfnLoader)  # noqa: S506 (a SafeLoader subclass)


def expand(sam: dict, region: str = "us-east-1") -> dict:
    """Returns the CloudFormation template the SAM transform makes of `sam` (left unchanged)."""
    sam = copy.deepcopy(sam)
    for resource in sam.get("Resources", {}).values():
        props = resource.get("Properties", {})
        if resource.get("Type") == "AWS::Serverless::Function" and isinstance(props.get("CodeUri"), str):
            if not props["CodeUri"].startswith("s3://"):
                props["CodeUri"] = dict(PLACEHOLDER_CODE)
    policies = get_bundled_managed_policy_map("aws") or {}
    translator = Translator(None, Parser(), boto_session=boto3.Session(region_name=region))
    parameters: dict = {}
    try:
        return translator.translate(sam, parameter_values=parameters, get_managed_policy_map=lambda: policies)
    except InvalidDocumentException as e:
        causes = "; ".join(str(c) for c in e.causes)
        raise SystemExit(f"SAM transform failed: {e} {causes}") from e


def main(argv: list[str]) -> int:
    template = Path(argv[1]) if len(argv) > 1 else TEMPLATE
    expanded = expand(load_sam(template))
    text = json.dumps(expanded, indent=1, sort_keys=True)
    if len(argv) > 2:
        Path(argv[2]).parent.mkdir(parents=True, exist_ok=True)
        Path(argv[2]).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
