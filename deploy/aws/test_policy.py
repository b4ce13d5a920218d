"""Policy test of the AWS deployment: what the EXPANDED template (after the SAM transform, i.e.
what CloudFormation would create) must hold, and proof that each check can fail.

Each `check_*` function returns the violations it finds (empty when the policy holds).
`TheDeploymentHolds` asserts every check is empty on the real template; `EachCheckCanFail`
breaks a copy of the expanded template once per check and asserts the check then reports it,
so no check is vacuous. A new check needs a breaking mutation in `BREAKS` or the suite fails.

Run by deploy/aws/check.sh, or alone with the venv's python (it expands template.yaml itself when
CASHFLOW_EXPANDED_TEMPLATE does not name an expanded template):
    python -m unittest discover -s deploy/aws -p test_policy.py
"""

import copy
import json
import os
import sys
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent

APP_FUNCTIONS = {
    "LedgerApi": "ledger-api",
    "ReportsApi": "reports-api",
    "Consumer": "consumer",
    "OutboxSweep": "outbox-sweep",
    "Admin": "admin",
    "Web": "web",
}
# The process's configuration, as the functions read it (README, issues 12 and 13).
REQUIRED_ENV = {
    "CASHFLOW_DATABASE_URL",
    "CASHFLOW_DATABASE_SECRET_ARN",
    "CASHFLOW_QUEUE_URL",
    "CASHFLOW_CACHE_URL",
    "CASHFLOW_CACHE_SECRET_ARN",
    "CASHFLOW_OIDC_ISSUER",
    "CASHFLOW_OIDC_CLIENT_IDS",
    "CASHFLOW_NO_BUILTIN_ISSUER",
}
# Every route the API serves and the one scope it requires (README's endpoint table).
ROUTES = {
    ("/v1/entries", "post"): "cashflow/entries:write",
    ("/v1/entries", "get"): "cashflow/entries:read",
    ("/v1/entries/{id}", "get"): "cashflow/entries:read",
    ("/v1/entries/{id}/reversal", "post"): "cashflow/entries:write",
    ("/v1/balances/daily/{date}", "get"): "cashflow/reports:read",
    ("/v1/balances/daily", "get"): "cashflow/reports:read",
}
# The web app's routes (the `web` function): no JWT authorizer, the app has its own session.
WEB_ROUTES = {("/", "get"), ("/{proxy+}", "x-amazon-apigateway-any-method")}
# What the functions write as CloudWatch EMF (crates/lambda/src/emf.rs, read below), and the
# metrics that must have an alarm.
EMF_SOURCE = HERE.parent.parent / "crates" / "lambda" / "src" / "emf.rs"
EMF_ALARMED = {"ConsolidationLagSeconds", "OutboxOldestAgeSeconds", "EventsRejected", "EventsPoison"}
ENDPOINT_SERVICES = {"sqs", "secretsmanager", "kms", "logs", "xray"}
DATA_PORTS = {5432, 6379}
PUBLIC_CIDRS = {"0.0.0.0/0", "::/0"}


# ---------------------------------------------------------------- reading the template


def load_expanded() -> dict:
    path = os.environ.get("CASHFLOW_EXPANDED_TEMPLATE")
    if path and Path(path).is_file():
        return json.loads(Path(path).read_text(encoding="utf-8"))
    sys.path.insert(0, str(HERE))
    import expand  # the venv's aws-sam-translator

    return expand.expand(expand.load_sam())


def of_type(t: dict, type_: str) -> dict:
    return {k: r.get("Properties", {}) for k, r in t["Resources"].items() if r["Type"] == type_}


def value(t: dict, x):
    """A property's value with parameter references (their default) and FindInMap resolved."""
    if isinstance(x, dict) and set(x) == {"Ref"} and x["Ref"] in t.get("Parameters", {}):
        return t["Parameters"][x["Ref"]].get("Default")
    if isinstance(x, dict) and set(x) == {"Fn::FindInMap"}:
        m, k1, k2 = x["Fn::FindInMap"]
        return t["Mappings"][m][k1][k2]
    return x


def number(t: dict, x) -> float:
    v = value(t, x)
    return float(v) if v is not None else float("nan")


def ref(x) -> str | None:
    """The logical id `x` names through Ref or Fn::GetAtt, else None."""
    if isinstance(x, dict) and "Ref" in x:
        return x["Ref"]
    if isinstance(x, dict) and "Fn::GetAtt" in x:
        return x["Fn::GetAtt"][0]
    return None


def is_cmk(t: dict, x) -> bool:
    """`x` names a customer-managed key of this template (not an AWS-managed alias)."""
    name = ref(x)
    return name is not None and t["Resources"].get(name, {}).get("Type") == "AWS::KMS::Key"


def true(t: dict, x) -> bool:
    return value(t, x) in (True, "true", "True")


# ---------------------------------------------------------------- encryption


def check_keys_rotate(t):
    return [f"{k}: key rotation off" for k, p in of_type(t, "AWS::KMS::Key").items() if not p.get("EnableKeyRotation")]


def check_queues_encrypted(t):
    return [f"{k}: not encrypted with this stack's key" for k, p in of_type(t, "AWS::SQS::Queue").items()
            if not is_cmk(t, p.get("KmsMasterKeyId"))]


def check_database_encrypted(t):
    out = []
    for k, p in of_type(t, "AWS::RDS::DBInstance").items():
        if not true(t, p.get("StorageEncrypted")) or not is_cmk(t, p.get("KmsKeyId")):
            out.append(f"{k}: storage not encrypted with this stack's key")
        if not is_cmk(t, p.get("MasterUserSecret", {}).get("KmsKeyId")):
            out.append(f"{k}: master secret not encrypted with this stack's key")
    for k, p in of_type(t, "AWS::RDS::DBProxy").items():
        if not true(t, p.get("RequireTLS")):
            out.append(f"{k}: the proxy accepts plaintext")
    for k, p in of_type(t, "AWS::RDS::DBParameterGroup").items():
        if str(p.get("Parameters", {}).get("rds.force_ssl")) != "1":
            out.append(f"{k}: rds.force_ssl is not 1")
    return out


def check_cache_encrypted(t):
    out = []
    for k, p in of_type(t, "AWS::ElastiCache::ReplicationGroup").items():
        if not true(t, p.get("TransitEncryptionEnabled")) or value(t, p.get("TransitEncryptionMode")) != "required":
            out.append(f"{k}: encryption in transit not required")
        if not true(t, p.get("AtRestEncryptionEnabled")) or not is_cmk(t, p.get("KmsKeyId")):
            out.append(f"{k}: not encrypted at rest with this stack's key")
        token = json.dumps(p.get("AuthToken"))
        if "{{resolve:secretsmanager:" not in token:
            out.append(f"{k}: auth token not from Secrets Manager")
    return out


def check_secrets_topics_and_environments_encrypted(t):
    out = [f"{k}: secret not encrypted with this stack's key"
           for k, p in of_type(t, "AWS::SecretsManager::Secret").items() if not is_cmk(t, p.get("KmsKeyId"))]
    out += [f"{k}: topic not encrypted" for k, p in of_type(t, "AWS::SNS::Topic").items()
            if not is_cmk(t, p.get("KmsMasterKeyId"))]
    out += [f"{k}: environment not encrypted with this stack's key"
            for k, p in of_type(t, "AWS::Lambda::Function").items()
            if k in APP_FUNCTIONS and not is_cmk(t, p.get("KmsKeyArn"))]
    return out


def check_log_groups_encrypted_with_retention(t):
    out = []
    for k, p in of_type(t, "AWS::Logs::LogGroup").items():
        if not is_cmk(t, p.get("KmsKeyId")):
            out.append(f"{k}: log group not encrypted with this stack's key")
        if not number(t, p.get("RetentionInDays")) > 0:
            out.append(f"{k}: log group kept forever")
    return out


# ---------------------------------------------------------------- availability and data safety


def _failed(name, rules):
    """The messages of the rules that do not hold, each prefixed with the resource's name."""
    return [f"{name}: {message}" for holds, message in rules if not holds]


def check_database_multi_az_protected_and_backed_up(t):
    dbs = of_type(t, "AWS::RDS::DBInstance")
    out = [] if dbs else ["no RDS instance"]
    for k, p in dbs.items():
        out += _failed(k, [
            (value(t, p.get("Engine")) == "postgres", "not PostgreSQL"),
            (true(t, p.get("MultiAZ")), "not Multi-AZ"),
            (true(t, p.get("DeletionProtection")), "no deletion protection"),
            (t["Resources"][k].get("DeletionPolicy") in ("Snapshot", "Retain"), "deleted without a snapshot"),
            (number(t, p.get("BackupRetentionPeriod")) >= 7, "backups kept under 7 days"),
            (true(t, p.get("ManageMasterUserPassword")) and "MasterUserPassword" not in p,
             "master password not managed in Secrets Manager"),
            (not true(t, p.get("PubliclyAccessible")), "publicly accessible"),
        ])
    targets = [n for p in of_type(t, "AWS::RDS::DBProxyTargetGroup").values()
               for n in map(ref, p.get("DBInstanceIdentifiers", []))]
    out += [f"{k}: not behind the RDS Proxy" for k in dbs if k not in targets]
    return out


def check_cache_multi_az_with_failover(t):
    groups = of_type(t, "AWS::ElastiCache::ReplicationGroup")
    out = [] if groups else ["no ElastiCache replication group"]
    for k, p in groups.items():
        out += _failed(k, [
            (true(t, p.get("MultiAZEnabled")) and true(t, p.get("AutomaticFailoverEnabled")),
             "no Multi-AZ automatic failover"),
            (number(t, p.get("NumCacheClusters", 1)) >= 2, "no replica"),
        ])
    return out


def check_subnets_span_two_zones(t):
    zones = [json.dumps(p.get("AvailabilityZone"), sort_keys=True) for p in of_type(t, "AWS::EC2::Subnet").values()]
    return [] if len(set(zones)) >= 2 else [f"subnets in {len(set(zones))} availability zone(s)"]


# ---------------------------------------------------------------- functions


def check_every_function_traced(t):
    return [f"{k}: X-Ray tracing not active" for k, p in of_type(t, "AWS::Lambda::Function").items()
            if p.get("TracingConfig", {}).get("Mode") != "Active"]


def check_every_function_logs_to_its_group(t):
    groups = of_type(t, "AWS::Logs::LogGroup")
    return [f"{k}: logs to a group this stack does not manage (no retention, no key)"
            for k, p in of_type(t, "AWS::Lambda::Function").items()
            if ref(p.get("LoggingConfig", {}).get("LogGroup")) not in groups]


def check_app_functions_runtime_and_architecture(t):
    out = []
    functions = of_type(t, "AWS::Lambda::Function")
    arch = t["Parameters"].get("Architecture", {})
    if arch.get("Default") != "arm64" or set(arch.get("AllowedValues", [])) != {"arm64", "x86_64"}:
        out.append("Architecture parameter: default must be arm64, choices arm64 and x86_64")
    for k, name in APP_FUNCTIONS.items():
        p = functions.get(k)
        if p is None:
            out.append(f"{k} ({name}): missing")
            continue
        if p.get("Runtime") != "provided.al2023" or p.get("Handler") != "bootstrap":
            out.append(f"{k}: not provided.al2023 with the bootstrap handler")
        if p.get("Architectures") != [{"Ref": "Architecture"}]:
            out.append(f"{k}: architecture not the Architecture parameter")
    return out


def check_app_functions_in_private_subnets(t):
    out = []
    subnets = of_type(t, "AWS::EC2::Subnet")
    for k, p in of_type(t, "AWS::Lambda::Function").items():
        if k not in APP_FUNCTIONS:
            continue
        vpc = p.get("VpcConfig", {})
        ids = [ref(s) for s in vpc.get("SubnetIds", [])]
        if len(ids) < 2 or any(i not in subnets or true(t, subnets[i].get("MapPublicIpOnLaunch")) for i in ids):
            out.append(f"{k}: not in this stack's private subnets")
        if not vpc.get("SecurityGroupIds"):
            out.append(f"{k}: no security group")
    return out


def check_app_functions_configuration(t):
    out = []
    for k, p in of_type(t, "AWS::Lambda::Function").items():
        if k not in APP_FUNCTIONS:
            continue
        env = p.get("Environment", {}).get("Variables", {})
        missing = REQUIRED_ENV - set(env)
        if missing:
            out.append(f"{k}: missing {sorted(missing)}")
        db = json.dumps(env.get("CASHFLOW_DATABASE_URL", ""))
        userinfo = db.split("://", 1)[-1].split("@", 1)[0] if "@" in db else ""
        if ":" in userinfo or "sslmode=verify-full" not in db or "DbProxy.Endpoint" not in db:
            out.append(f"{k}: database URL must reach the proxy with verify-full TLS and no password")
        if not json.dumps(env.get("CASHFLOW_CACHE_URL", "")).startswith('{"Fn::Sub": "rediss://'):
            out.append(f"{k}: cache URL is not rediss://")
        if env.get("CASHFLOW_NO_BUILTIN_ISSUER") != "true":
            out.append(f"{k}: the built-in issuer is on")
    return out


def check_sweep_runs_every_minute(t):
    rules = [p for p in of_type(t, "AWS::Events::Rule").values()
             if p.get("ScheduleExpression") == "rate(1 minute)"
             and any(ref(x.get("Arn")) == "OutboxSweep" for x in p.get("Targets", []))]
    return [] if rules else ["outbox-sweep is not scheduled every minute"]


def check_no_wildcard_permissions(t):
    out = []
    for k, p in of_type(t, "AWS::IAM::Role").items():
        for policy in p.get("Policies", []):
            for s in policy["PolicyDocument"]["Statement"]:
                actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
                if s.get("Effect") == "Allow" and any(a == "*" or a.endswith(":*") for a in actions):
                    out.append(f"{k}: allows {actions}")
                if s.get("Effect") == "Allow" and s.get("Resource") == "*":
                    out.append(f"{k}: allows {actions} on every resource")
    return out


# ---------------------------------------------------------------- queue


def _main_and_dead_letter_queues(t):
    queues = of_type(t, "AWS::SQS::Queue")
    main = {k: p for k, p in queues.items() if "RedrivePolicy" in p}
    return queues, main


def check_queue_redrives_after_five_receives(t):
    queues, main = _main_and_dead_letter_queues(t)
    if not main:
        return ["no queue with a redrive policy"]
    out = []
    for k, p in main.items():
        rp = p["RedrivePolicy"]
        if number(t, rp.get("maxReceiveCount")) != 5:
            out.append(f"{k}: maxReceiveCount is not 5")
        if ref(rp.get("deadLetterTargetArn")) not in queues:
            out.append(f"{k}: dead-letter queue not in this stack")
    return out


def check_visibility_covers_six_consumer_timeouts(t):
    _, main = _main_and_dead_letter_queues(t)
    consumer = of_type(t, "AWS::Lambda::Function").get("Consumer", {})
    timeout = number(t, consumer.get("Timeout"))
    return [f"{k}: visibility timeout {number(t, p.get('VisibilityTimeout'))} < 6 x consumer timeout {timeout}"
            for k, p in main.items() if not number(t, p.get("VisibilityTimeout", 30)) >= 6 * timeout]


def check_consumer_reports_partial_batch_failures(t):
    _, main = _main_and_dead_letter_queues(t)
    mappings = [p for p in of_type(t, "AWS::Lambda::EventSourceMapping").values()
                if ref(p.get("FunctionName")) == "Consumer"]
    if len(mappings) != 1:
        return [f"consumer has {len(mappings)} event source mappings, expected 1"]
    p, out = mappings[0], []
    if ref(p.get("EventSourceArn")) not in main:
        out.append("the consumer does not read the redriven queue")
    if "ReportBatchItemFailures" not in p.get("FunctionResponseTypes", []):
        out.append("no ReportBatchItemFailures: one bad message would fail its whole batch")
    if not number(t, p.get("MaximumBatchingWindowInSeconds", 0)) > 0:
        out.append("no batching window")
    concurrency = p.get("ScalingConfig", {}).get("MaximumConcurrency")
    if concurrency is None or not 2 <= number(t, concurrency) <= 50:
        out.append("no maximum concurrency protecting the database (2..50 by default)")
    return out


# ---------------------------------------------------------------- API


def _api_body(t):
    apis = of_type(t, "AWS::ApiGatewayV2::Api")
    return next(iter(apis.values()), {}).get("Body", {})


def check_every_route_has_the_authorizer_and_its_scope(t):
    body, out = _api_body(t), []
    schemes = body.get("components", {}).get("securitySchemes", {})
    jwt = {n for n, s in schemes.items() if s.get("x-amazon-apigateway-authorizer", {}).get("type") == "jwt"}
    for n in jwt:
        config = schemes[n]["x-amazon-apigateway-authorizer"].get("jwtConfiguration", {})
        if "UserPool" not in json.dumps(config.get("issuer")):
            out.append(f"authorizer {n}: issuer is not this stack's user pool")
        if {ref(a) for a in config.get("audience", [])} != {"WebClient", "MachineClient"}:
            out.append(f"authorizer {n}: audience is not the two app clients")
    seen = set()
    for path, methods in body.get("paths", {}).items():
        for method, op in methods.items():
            if (path, method) in WEB_ROUTES:
                if "Web.Arn" not in json.dumps(op.get("x-amazon-apigateway-integration", {})):
                    out.append(f"{method} {path}: a web route not served by the web function")
                if op.get("security") not in (None, [], [{"NONE": []}]) and any(
                        n in jwt for req in op.get("security", []) for n in req):
                    out.append(f"{method} {path}: the web app's route behind the JWT authorizer")
                seen.add((path, method))
                continue
            if method.startswith("x-"):
                continue
            seen.add((path, method))
            scopes = [s for req in op.get("security", []) for n, ss in req.items() if n in jwt for s in ss]
            want = ROUTES.get((path, method))
            if not scopes:
                out.append(f"{method.upper()} {path}: no JWT authorizer with a scope")
            elif want is not None and scopes != [want]:
                out.append(f"{method.upper()} {path}: scopes {scopes}, expected [{want}]")
    out += [f"{m.upper()} {p}: route missing" for p, m in (ROUTES.keys() | WEB_ROUTES) - seen]
    return out


def check_api_throttled_by_default(t):
    out = []
    for k, p in of_type(t, "AWS::ApiGatewayV2::Stage").items():
        s = p.get("DefaultRouteSettings", {})
        for key in ("ThrottlingRateLimit", "ThrottlingBurstLimit"):
            x = s.get(key)
            if ref(x) not in t["Parameters"] or not number(t, x) > 0:
                out.append(f"{k}: {key} is not a positive parameter")
    return out or ([] if of_type(t, "AWS::ApiGatewayV2::Stage") else ["no API stage"])


def check_api_access_logs_are_json_with_ids(t):
    out = []
    for k, p in of_type(t, "AWS::ApiGatewayV2::Stage").items():
        logs = p.get("AccessLogSettings", {})
        if ref(logs.get("DestinationArn")) not in of_type(t, "AWS::Logs::LogGroup"):
            out.append(f"{k}: access logs not sent to this stack's log group")
            continue
        try:
            fields = json.loads(logs.get("Format", ""))
        except json.JSONDecodeError:
            out.append(f"{k}: access log format is not JSON")
            continue
        for want in ("$context.requestId", "$context.integration.requestId"):
            if want not in fields.values():
                out.append(f"{k}: access log lacks {want}")
    return out or ([] if of_type(t, "AWS::ApiGatewayV2::Stage") else ["no API stage"])


def check_cors_allows_only_the_web_app(t):
    cors = _api_body(t).get("x-amazon-apigateway-cors", {})
    origins = cors.get("allowOrigins", [])
    want = t["Parameters"]["WebAppOrigin"]["Default"]
    if origins != [want] and origins != [{"Ref": "WebAppOrigin"}]:
        return [f"CORS origins {origins}, expected only the WebAppOrigin parameter"]
    return [] if not cors.get("allowCredentials") else ["CORS allows credentials"]


# ---------------------------------------------------------------- network


def check_no_internet_path_for_data(t):
    out = []
    for type_ in ("AWS::EC2::InternetGateway", "AWS::EC2::NatGateway", "AWS::EC2::VPCGatewayAttachment",
                  "AWS::EC2::EgressOnlyInternetGateway", "AWS::EC2::EIP"):
        out += [f"{k}: {type_}" for k in of_type(t, type_)]
    out += [f"{k}: public subnet" for k, p in of_type(t, "AWS::EC2::Subnet").items()
            if true(t, p.get("MapPublicIpOnLaunch"))]
    out += [f"{k}: route to {p.get('DestinationCidrBlock')}" for k, p in of_type(t, "AWS::EC2::Route").items()
            if p.get("GatewayId") or p.get("NatGatewayId")]
    return out


def _ingress_rules(t):
    for k, p in of_type(t, "AWS::EC2::SecurityGroup").items():
        for rule in p.get("SecurityGroupIngress", []):
            yield k, rule
    for k, p in of_type(t, "AWS::EC2::SecurityGroupIngress").items():
        yield ref(p.get("GroupId")) or k, p


def check_no_security_group_open_to_the_world(t):
    out = []
    for group, rule in _ingress_rules(t):
        if rule.get("CidrIp") in PUBLIC_CIDRS or rule.get("CidrIpv6") in PUBLIC_CIDRS:
            lo, hi = int(rule.get("FromPort", 0)), int(rule.get("ToPort", 65535))
            data = [port for port in DATA_PORTS if lo <= port <= hi or rule.get("IpProtocol") == "-1"]
            out.append(f"{group}: ingress from {rule.get('CidrIp') or rule.get('CidrIpv6')}"
                       + (f" on data port(s) {data}" if data else ""))
    return out


def check_data_reachable_only_from_their_clients(t):
    """RDS from the proxy only, the proxy and Redis from the functions only, each on its port."""
    allowed = {
        ("DbSecurityGroup", "ProxySecurityGroup", 5432),
        ("ProxySecurityGroup", "FunctionSecurityGroup", 5432),
        ("CacheSecurityGroup", "FunctionSecurityGroup", 6379),
        ("EndpointSecurityGroup", "FunctionSecurityGroup", 443),
        ("EndpointSecurityGroup", "ProxySecurityGroup", 443),
    }
    out = []
    for group, rule in _ingress_rules(t):
        key = (group, ref(rule.get("SourceSecurityGroupId")), int(rule.get("FromPort", -1)))
        if key not in allowed or rule.get("FromPort") != rule.get("ToPort") or rule.get("IpProtocol") != "tcp":
            out.append(f"{group}: unexpected ingress {rule}")
    uses = {
        "Db": ("AWS::RDS::DBInstance", "VPCSecurityGroups", "DbSecurityGroup"),
        "DbProxy": ("AWS::RDS::DBProxy", "VpcSecurityGroupIds", "ProxySecurityGroup"),
        "Cache": ("AWS::ElastiCache::ReplicationGroup", "SecurityGroupIds", "CacheSecurityGroup"),
    }
    for k, (type_, prop, group) in uses.items():
        p = of_type(t, type_).get(k, {})
        if [ref(g) for g in p.get(prop, [])] != [group]:
            out.append(f"{k}: not (only) in {group}")
    return out


def check_vpc_endpoints_replace_a_nat(t):
    found = set()
    out = []
    for k, p in of_type(t, "AWS::EC2::VPCEndpoint").items():
        service = json.dumps(p.get("ServiceName")).rsplit(".", 1)[-1].strip('"}')
        found.add(service)
        if p.get("VpcEndpointType") != "Interface" or not p.get("PrivateDnsEnabled"):
            out.append(f"{k}: not an interface endpoint with private DNS")
        if len(p.get("SubnetIds", [])) < 2:
            out.append(f"{k}: not in both zones")
    out += [f"no VPC endpoint for {s}" for s in sorted(ENDPOINT_SERVICES - found)]
    return out


# ---------------------------------------------------------------- identity


def check_user_pool_mfa_passwords_and_merchant(t):
    out = []
    pools = of_type(t, "AWS::Cognito::UserPool")
    if len(pools) != 1:
        return [f"{len(pools)} user pools"]
    (k, p), = pools.items()
    if p.get("MfaConfiguration") != "ON" or "SOFTWARE_TOKEN_MFA" not in p.get("EnabledMfas", []):
        out.append(f"{k}: TOTP MFA not required")
    pw = p.get("Policies", {}).get("PasswordPolicy", {})
    if not int(pw.get("MinimumLength", 0)) >= 12 or not all(
            pw.get(r) for r in ("RequireLowercase", "RequireUppercase", "RequireNumbers", "RequireSymbols")):
        out.append(f"{k}: weak password policy")
    if not p.get("AdminCreateUserConfig", {}).get("AllowAdminCreateUserOnly"):
        out.append(f"{k}: self sign-up allowed")
    merchant = [a for a in p.get("Schema", []) if a.get("Name") == "merchant_id"]
    if not merchant or merchant[0].get("Mutable") is not False:
        out.append(f"{k}: custom:merchant_id is missing or mutable")
    trigger = p.get("LambdaConfig", {}).get("PreTokenGenerationConfig", {})
    if ref(trigger.get("LambdaArn")) not in of_type(t, "AWS::Lambda::Function") or trigger.get("LambdaVersion") not in ("V2_0", "V3_0"):
        out.append(f"{k}: no pre-token-generation trigger that can customize access tokens")
    groups = {p.get("GroupName") for p in of_type(t, "AWS::Cognito::UserPoolGroup").values()}
    if groups != {"owner", "cashier", "accountant"}:
        out.append(f"groups {sorted(groups)}")
    return out


def check_app_clients(t):
    out = []
    clients = of_type(t, "AWS::Cognito::UserPoolClient")
    web, machine = clients.get("WebClient", {}), clients.get("MachineClient", {})
    if web.get("GenerateSecret") or web.get("AllowedOAuthFlows") != ["code"]:
        out.append("WebClient: must be a public client with the code flow only (PKCE)")
    if any(not json.dumps(u).startswith(('"https://', '{"Fn::Sub": "${WebAppOrigin}')) for u in web.get("CallbackURLs", [])):
        out.append("WebClient: callback is not the web app over https")
    if "custom:merchant_id" in web.get("WriteAttributes", []) or not web.get("WriteAttributes"):
        out.append("WebClient: users may write custom:merchant_id")
    if not machine.get("GenerateSecret") or machine.get("AllowedOAuthFlows") != ["client_credentials"]:
        out.append("MachineClient: must be confidential with client_credentials only")
    servers = {p.get("Identifier") for p in of_type(t, "AWS::Cognito::UserPoolResourceServer").values()}
    scopes = machine.get("AllowedOAuthScopes", [])
    if not scopes or any(s.split("/", 1)[0] not in servers for s in scopes):
        out.append("MachineClient: scopes are not the resource server's")
    return out


def check_web_signs_in_through_the_hosted_ui_with_a_shared_key(t):
    out = []
    env = t["Resources"].get("Web", {}).get("Properties", {}).get("Environment", {}).get("Variables", {})
    if ref(env.get("CASHFLOW_OIDC_WEB_CLIENT_ID")) != "WebClient":
        out.append("Web: does not sign in with the web app client")
    if "amazoncognito.com" not in json.dumps(env.get("CASHFLOW_OIDC_WEB_DOMAIN")):
        out.append("Web: no hosted UI domain")
    secret = json.dumps(env.get("CASHFLOW_WEB_SECRET"))
    secrets = of_type(t, "AWS::SecretsManager::Secret")
    if "{{resolve:secretsmanager:${WebSessionSecret}" not in secret or "WebSessionSecret" not in secrets:
        out.append("Web: the session key is not one generated secret shared by every environment")
    return out


# ---------------------------------------------------------------- alarms and outputs


def _alarms_on(t, namespace, metric):
    found = []
    for k, p in of_type(t, "AWS::CloudWatch::Alarm").items():
        metrics = [p] + [m.get("MetricStat", {}).get("Metric", {}) for m in p.get("Metrics", [])]
        if any(m.get("Namespace") == namespace and m.get("MetricName") == metric for m in metrics):
            found.append((k, p))
    return found


def check_alarms(t):
    out = []
    wanted = [
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "DeadLetterQueue"),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage", "Queue"),
        ("AWS/Lambda", "Errors", "Consumer"),
        ("AWS/ApiGateway", "5xx", "Api"),
        ("AWS/ApiGateway", "Latency", "Api"),
        ("cashflow", "ConsolidationLagSeconds", None),
    ]
    for namespace, metric, target in wanted:
        alarms = _alarms_on(t, namespace, metric)
        if target is not None:
            alarms = [(k, p) for k, p in alarms if f'"{target}"' in json.dumps(p)]
        if not alarms:
            out.append(f"no alarm on {namespace} {metric}" + (f" of {target}" if target else ""))
    for k, p in _alarms_on(t, "AWS/SQS", "ApproximateNumberOfMessagesVisible"):
        if number(t, p.get("Threshold")) != 0 or p.get("ComparisonOperator") != "GreaterThanThreshold":
            out.append(f"{k}: the DLQ alarm must fire on depth > 0")
    for k, p in _alarms_on(t, "AWS/ApiGateway", "Latency"):
        if p.get("ExtendedStatistic") != "p99":
            out.append(f"{k}: API latency alarm is not on p99")
    out += [f"{k}: notifies nobody" for k, p in of_type(t, "AWS::CloudWatch::Alarm").items()
            if not p.get("AlarmActions")]
    if not of_type(t, "AWS::CloudWatch::Dashboard"):
        out.append("no dashboard")
    return out


def emf_emitted():
    """The namespace and metric names the functions write, read from the Rust source."""
    import re
    text = EMF_SOURCE.read_text()
    namespace = re.search(r'pub const NAMESPACE: &str = "([^"]+)"', text).group(1)
    names = set(re.findall(r'Series \{ source: "[a-z_]+", name: "([A-Za-z]+)"', text))
    return namespace, names


def check_emf_alarms_read_what_the_functions_emit(t):
    namespace, emitted = emf_emitted()
    out, alarmed = [], set()
    for k, p in of_type(t, "AWS::CloudWatch::Alarm").items():
        metrics = [p] + [m.get("MetricStat", {}).get("Metric", {}) for m in p.get("Metrics", [])]
        for m in metrics:
            if m.get("Namespace") in ("AWS/SQS", "AWS/Lambda", "AWS/ApiGateway", None):
                continue
            if m.get("Namespace") != namespace or m.get("MetricName") not in emitted:
                out.append(f"{k}: {m.get('Namespace')}/{m.get('MetricName')} is not a metric the functions emit")
                continue
            if [d.get("Name") for d in m.get("Dimensions", [])] != ["Stage"]:
                out.append(f"{k}: {m.get('MetricName')} must be read by the Stage dimension the EMF lines carry")
            alarmed.add(m["MetricName"])
    out += [f"no alarm on the EMF metric {namespace}/{m}" for m in sorted(EMF_ALARMED - alarmed)]
    return out


def check_outputs(t):
    want = {"ApiUrl", "UserPoolId", "WebClientId", "MachineClientId"}
    return [f"no output {o}" for o in sorted(want - set(t.get("Outputs", {})))]


CHECKS = {name: f for name, f in sorted(globals().items()) if name.startswith("check_")}


# ---------------------------------------------------------------- breaking mutations


def _res(name):
    return lambda t: t["Resources"][name]["Properties"]


def _set(name, path, v):
    def mutate(t):
        p = t["Resources"][name]["Properties"]
        *head, last = path
        for key in head:
            p = p.setdefault(key, {})
        p[last] = v
    return mutate


def _delete(name, path):
    def mutate(t):
        p = t["Resources"][name]["Properties"]
        *head, last = path
        for key in head:
            p = p[key]
        del p[last]
    return mutate


def _add_resource(name, type_, props):
    return lambda t: t["Resources"].__setitem__(name, {"Type": type_, "Properties": props})


def _drop_route_security(t):
    t["Resources"]["Api"]["Properties"]["Body"]["paths"]["/v1/entries"]["post"]["security"] = []


BREAKS = {
    "check_keys_rotate": _set("Key", ["EnableKeyRotation"], False),
    "check_queues_encrypted": _set("DeadLetterQueue", ["KmsMasterKeyId"], "alias/aws/sqs"),
    "check_database_encrypted": _set("DbProxy", ["RequireTLS"], False),
    "check_cache_encrypted": _set("Cache", ["AuthToken"], "plain-text-token-in-the-template"),
    "check_secrets_topics_and_environments_encrypted": _delete("Consumer", ["KmsKeyArn"]),
    "check_log_groups_encrypted_with_retention": _delete("ApiAccessLogs", ["RetentionInDays"]),
    "check_database_multi_az_protected_and_backed_up": _set("Db", ["MultiAZ"], False),
    "check_cache_multi_az_with_failover": _set("Cache", ["AutomaticFailoverEnabled"], False),
    "check_subnets_span_two_zones": _set("PrivateSubnetB", ["AvailabilityZone"], {"Fn::Select": [0, {"Fn::GetAZs": ""}]}),
    "check_every_function_traced": _delete("PreTokenGeneration", ["TracingConfig"]),
    "check_every_function_logs_to_its_group": _delete("OutboxSweep", ["LoggingConfig"]),
    "check_app_functions_runtime_and_architecture": _set("Admin", ["Runtime"], "provided.al2"),
    "check_app_functions_in_private_subnets": _delete("ReportsApi", ["VpcConfig"]),
    "check_app_functions_configuration": _set("LedgerApi", ["Environment", "Variables", "CASHFLOW_DATABASE_URL"],
                                              {"Fn::Sub": "postgres://u:secret@${DbProxy.Endpoint}:5432/cashflow?sslmode=verify-full"}),
    "check_sweep_runs_every_minute": _set("OutboxSweepEveryMinute", ["ScheduleExpression"], "rate(1 hour)"),
    "check_no_wildcard_permissions": lambda t: _res("ConsumerRole")(t)["Policies"][0]["PolicyDocument"]["Statement"].append(
        {"Effect": "Allow", "Action": "sqs:*", "Resource": "*"}),
    "check_queue_redrives_after_five_receives": _set("Queue", ["RedrivePolicy", "maxReceiveCount"], 50),
    "check_visibility_covers_six_consumer_timeouts": _set("Queue", ["VisibilityTimeout"], 60),
    "check_consumer_reports_partial_batch_failures": _delete("ConsumerEvents", ["FunctionResponseTypes"]),
    "check_every_route_has_the_authorizer_and_its_scope": _drop_route_security,
    "check_api_throttled_by_default": _delete("ApiApiGatewayDefaultStage", ["DefaultRouteSettings", "ThrottlingRateLimit"]),
    "check_api_access_logs_are_json_with_ids": _set("ApiApiGatewayDefaultStage", ["AccessLogSettings", "Format"],
                                                     "$context.requestId $context.status"),
    "check_cors_allows_only_the_web_app": _set("Api", ["Body", "x-amazon-apigateway-cors", "allowOrigins"], ["*"]),
    "check_no_internet_path_for_data": _add_resource("Igw", "AWS::EC2::InternetGateway", {}),
    "check_no_security_group_open_to_the_world": _set("DbSecurityGroup", ["SecurityGroupIngress"],
                                                       [{"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "CidrIp": "0.0.0.0/0"}]),
    "check_data_reachable_only_from_their_clients": _set("CacheFromFunctions", ["FromPort"], 0),
    "check_vpc_endpoints_replace_a_nat": lambda t: t["Resources"].pop("XRayEndpoint"),
    "check_user_pool_mfa_passwords_and_merchant":
        lambda t: t["Resources"]["UserPool"]["Properties"]["Schema"][0].__setitem__("Mutable", True),
    "check_app_clients": _set("WebClient", ["WriteAttributes"], ["email", "custom:merchant_id"]),
    "check_alarms": lambda t: t["Resources"].pop("DeadLetterQueueNotEmpty"),
    "check_outputs": lambda t: t["Outputs"].pop("MachineClientId"),
    "check_web_signs_in_through_the_hosted_ui_with_a_shared_key":
        _set("Web", ["Environment", "Variables", "CASHFLOW_WEB_SECRET"], "a-literal-secret-in-the-template-0123456789"),
    "check_emf_alarms_read_what_the_functions_emit": _set("OutboxOldestAge", ["MetricName"], "OutboxAgeSeconds"),
}


# ---------------------------------------------------------------- the tests


class TheDeploymentHolds(unittest.TestCase):
    """Given the expanded template, when each policy check runs, then it finds nothing."""

    @classmethod
    def setUpClass(cls):
        cls.template = load_expanded()


def _holds(check):
    def test(self):
        self.assertEqual([], check(self.template))
    test.__doc__ = check.__doc__
    return test


class EachCheckCanFail(unittest.TestCase):
    """Given the template broken in the way a check guards against, then that check reports it."""

    @classmethod
    def setUpClass(cls):
        cls.template = load_expanded()

    def test_every_check_has_a_breaking_mutation(self):
        self.assertEqual(set(), set(CHECKS) - set(BREAKS))
        self.assertEqual(set(), set(BREAKS) - set(CHECKS))


def _fails_when_broken(name, check):
    def test(self):
        broken = copy.deepcopy(self.template)
        BREAKS[name](broken)
        self.assertNotEqual([], check(broken), f"{name} did not notice its breaking mutation")
    return test


for _name, _check in CHECKS.items():
    setattr(TheDeploymentHolds, "test_" + _name.removeprefix("check_"), _holds(_check))
    setattr(EachCheckCanFail, "test_" + _name.removeprefix("check_") + "_fails_when_broken",
            _fails_when_broken(_name, _check))


if __name__ == "__main__":
    unittest.main()
