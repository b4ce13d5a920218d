"""Sets up moto's Cognito for tests/cognito.rs and prints, as JSON, the pool and the tokens.

Usage: cognito_pool.py ENDPOINT MERCHANT_A MERCHANT_B

Creates a user pool with a `custom:merchant_id` attribute and groups, an app client, a user in
each merchant (group `owner` and `accountant`), and a second pool. Real tokens come from
`InitiateAuth USER_PASSWORD_AUTH`. moto has no client-credentials flow, so machine-to-machine
tokens, and the forged ones of the attack cases, are signed here with the private key moto
ships and signs every pool's tokens with (read from moto's installed package, never copied).
"""

import base64
import gzip
import hashlib
import hmac
import json
import os
import sys
import time
import uuid

import boto3
import moto
from joserfc import jwk, jwt

endpoint, merchant_a, merchant_b = sys.argv[1:4]
idp = boto3.client(
    "cognito-idp",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="test",
    aws_secret_access_key="test",
)
PASSWORD = "Passw0rd!x"


def pool(name):
    schema = [{"Name": "merchant_id", "AttributeDataType": "String", "Mutable": False}]
    pool_id = idp.create_user_pool(PoolName=name, Schema=schema)["UserPool"]["Id"]
    client_id = idp.create_user_pool_client(
        UserPoolId=pool_id, ClientName="web", ExplicitAuthFlows=["USER_PASSWORD_AUTH"]
    )["UserPoolClient"]["ClientId"]
    return pool_id, client_id


def user(pool_id, client_id, name, merchant, group):
    idp.admin_create_user(
        UserPoolId=pool_id,
        Username=name,
        UserAttributes=[{"Name": "custom:merchant_id", "Value": merchant}],
        TemporaryPassword="Temp1234!x",
        MessageAction="SUPPRESS",
    )
    idp.admin_set_user_password(UserPoolId=pool_id, Username=name, Password=PASSWORD, Permanent=True)
    try:
        idp.create_group(UserPoolId=pool_id, GroupName=group)
    except idp.exceptions.GroupExistsException:
        pass
    idp.admin_add_user_to_group(UserPoolId=pool_id, Username=name, GroupName=group)
    result = idp.initiate_auth(
        ClientId=client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": name, "PASSWORD": PASSWORD},
    )["AuthenticationResult"]
    return {"access": result["AccessToken"], "id": result["IdToken"]}


suffix = uuid.uuid4().hex[:8]
pool_id, client_id = pool(f"cashflow-{suffix}")
other_pool_id, other_client_id = pool(f"other-{suffix}")
issuer = f"https://cognito-idp.us-east-1.amazonaws.com/{pool_id}"

with gzip.open(os.path.join(os.path.dirname(moto.__file__), "cognitoidp/resources/jwks-private.json.gz")) as f:
    private_key = jwk.RSAKey.import_key(json.load(f))


def mint(claims, kid="dummy", alg="RS256", lifetime=600):
    now = int(time.time())
    payload = {"iss": issuer, "iat": now, "exp": now + lifetime, "jti": str(uuid.uuid4()), **claims}
    return jwt.encode({"kid": kid, "alg": alg}, payload, private_key)


def machine(client, merchant, **overrides):
    """A client-credentials access token as Cognito writes it (sub = client_id)."""
    claims = {
        "sub": client,
        "client_id": client,
        "token_use": "access",
        "scope": "cashflow/entries:write cashflow/entries:read cashflow/reports:read",
        "custom:merchant_id": merchant,
    }
    claims.update(overrides)
    return claims


def swapped(claims, alg):
    """`alg: none` (no signature) or `HS256` keyed with the public key: the classic swaps."""

    def b64(raw):
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    now = int(time.time())
    payload = {"iss": issuer, "iat": now, "exp": now + 600, **claims}
    signing_input = f"{b64(json.dumps({'alg': alg, 'kid': 'dummy'}).encode())}.{b64(json.dumps(payload).encode())}"
    if alg == "none":
        return f"{signing_input}."
    public = json.dumps(private_key.as_dict(private=False)).encode()
    return f"{signing_input}.{b64(hmac.new(public, signing_input.encode(), hashlib.sha256).digest())}"


print(
    json.dumps(
        {
            "issuer": issuer,
            "jwks_url": f"{endpoint}/{pool_id}/.well-known/jwks.json",
            "client_id": client_id,
            "maria": user(pool_id, client_id, f"maria-{suffix}", merchant_a, "owner"),
            "joao": user(pool_id, client_id, f"joao-{suffix}", merchant_b, "accountant"),
            "other_pool": user(other_pool_id, other_client_id, f"eve-{suffix}", merchant_a, "owner"),
            "machine_a": mint(machine(client_id, merchant_a)),
            # No pre-token-generation trigger: nothing says which merchant (identity links).
            "machine_unclaimed": mint({k: v for k, v in machine(client_id, merchant_a).items() if k != "custom:merchant_id"}),
            "wrong_client": mint(machine("not-our-client", merchant_a)),
            "expired": mint(machine(client_id, merchant_a), lifetime=-3600),
            "alg_none": swapped(machine(client_id, merchant_a), "none"),
            "alg_hs256": swapped(machine(client_id, merchant_a), "HS256"),
            "random_kids": [mint(machine(client_id, merchant_a), kid=uuid.uuid4().hex) for _ in range(20)],
        }
    )
)
