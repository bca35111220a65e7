#!/usr/bin/env bash
# Seeds a fresh dev server (VAULT_ADDR, VAULT_TOKEN = root token) over the HTTP API, so JSON
# numbers and booleans keep their types (the CLI would write strings). See README.md here for
# the paths. Writes approle/userpass/token credentials into VAULT_DEV_STATE.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=${VAULT_DEV_STATE:-$root/.demo/vault}
: "${VAULT_ADDR:?VAULT_ADDR must point at the dev server, e.g. http://127.0.0.1:8200}"
: "${VAULT_TOKEN:?VAULT_TOKEN must be the dev server root token}"
mkdir -p "$state"
python3 - "$VAULT_ADDR" "$VAULT_TOKEN" "$state" <<'PY'
import base64, json, os, sys, urllib.error, urllib.request

addr, token, state = sys.argv[1:]

def call(method, path, body=None, missing_ok=False):
    req = urllib.request.Request(
        f"{addr}/v1/{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"X-Vault-Token": token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read()
            return json.loads(text) if text else {}
    except urllib.error.HTTPError as e:
        if missing_ok and e.code == 404:
            return None
        sys.exit(f"vault-dev seed: {method} {addr}/v1/{path}: HTTP {e.code}: {e.read().decode()[:300]}")
    except (urllib.error.URLError, OSError) as e:
        sys.exit(f"vault-dev seed: cannot reach {addr} ({e}); is the dev server running (vault-dev/start.sh)?")

# Idempotent enough for a re-run: existing mounts/auth methods are kept, KV v2 secrets that
# already have versions are not written again (so version 1 and 2 stay what they are).
mounts = call("GET", "sys/mounts")["data"]
auths = call("GET", "sys/auth")["data"]

def mount(path, version):
    if f"{path}/" not in mounts:
        call("POST", f"sys/mounts/{path}", {"type": "kv", "options": {"version": version}})

def enable_auth(kind):
    if f"{kind}/" not in auths:
        call("POST", f"sys/auth/{kind}", {"type": kind})

def kv2(mount, path, *versions):
    meta = call("GET", f"{mount}/metadata/{path}", missing_ok=True)
    if meta and meta["data"].get("current_version", 0) > 0:
        return
    for data in versions:
        call("POST", f"{mount}/data/{path}", {"data": data})

def kv1(mount, path, data):
    call("POST", f"{mount}/{path}", data)

# Mounts: secret/ is KV v2 in dev mode.
mount("kv1", "1")
mount("avp-v1", "1")
mount("kv", "2")

# The examples' secrets: two versions, typed values (JSON number, JSON bool).
web = {
    "username": "demo-user",
    "password": "s3cr3t-v1",
    "port": 5432,
    "enabled": True,
    "config": json.dumps({"db": {"host": "db.internal", "port": 5432}}, separators=(",", ":")),
    "ca_crt": "-----BEGIN CERTIFICATE-----\nMIIBdemo\n-----END CERTIFICATE-----\n",
}
kv2("secret", "demo/web", web, dict(web, password="s3cr3t-v2"))
kv1("kv1", "demo/legacy", {"api_key": "legacy-key-123", "user": "alice"})

# argocd-vault-plugin's own test data (its pkg/helpers/test_helpers.go), so its fixtures can be
# replayed: its KV v1 `secret/` is our `avp-v1/`, its KV v2 `kv/` is our `kv/`.
kv1("avp-v1", "testing", {
    "name": "test-name", "namespace": "test-namespace", "version": "1.0", "replicas": "2",
    "tag": "1.0", "secret-var-value": "dGVzdC1wYXNzd29yZA==",
    "secret-var-value2": "dGVzdC1wYXNzd29yZDI=", "secret-num": "MQ==",
    "secret-var-clear": "test-password"})
kv1("avp-v1", "foo", {"secret": "bar"})
kv1("avp-v1", "json", {"data": {"service": {"enableTLS": True, "ports": [80, 8080]},
                                 "deployment": {"replicas": 2, "image": {"name": "json-test", "tag": "latest"}}}})
kv1("avp-v1", "jsonstring", {"secret": '{"credentials":{"user":"test-user","pass":"test-password"}}'})
kv1("avp-v1", "bad_test", {"hello": "world"})
pretty = json.dumps({"key1": "secret1", "key2": "secret2", "key3": "secret3"}, indent=2) + "\n"
kv1("avp-v1", "base64", {"encoded_secret": base64.b64encode(pretty.encode()).decode()})
kv1("avp-v1", "yaml", {"secret": "---\nkey1: secret1\nkey2: secret2\nkey3: secret3"})
kv2("kv", "testing", {"name": "test-kv-name", "namespace": "test-kv-namespace", "version": "1.2",
                      "replicas": "3", "tag": "1.1", "target-port": 80})
kv2("kv", "test", {"hello": "world"})
kv2("kv", "versioned", {"secret": "version1"}, {"secret": "version2"})

# examples/conventions: one path per destination namespace and app (kv/data/<namespace>/<app>).
kv2("kv", "shop/payments", {"DATABASE_URL": "postgres://payments:pay-s3cr3t@db.shop:5432/payments",
                            "STRIPE_API_KEY": "sk_test_conventions"})

# A read-only policy and three ways to get it: approle, userpass, a plain token.
policy = "\n".join(f'path "{p}" {{ capabilities = ["read"] }}' for p in
                   ["secret/data/*", "secret/metadata/*", "kv1/*", "avp-v1/*", "kv/data/*", "kv/metadata/*"])
call("PUT", "sys/policies/acl/avp-reader", {"policy": policy})
enable_auth("approle")
call("POST", "auth/approle/role/avp", {"token_policies": "avp-reader", "token_ttl": "1h"})
role_id = call("GET", "auth/approle/role/avp/role-id")["data"]["role_id"]
secret_id = call("POST", "auth/approle/role/avp/secret-id")["data"]["secret_id"]
enable_auth("userpass")
call("POST", "auth/userpass/users/avp",
     {"password": "avp-password", "token_policies": "avp-reader", "token_ttl": "1h"})
reader = call("POST", "auth/token/create", {"policies": ["avp-reader"], "ttl": "2h"})["auth"]["client_token"]

for name, value in [("approle_role_id", role_id), ("approle_secret_id", secret_id), ("reader_token", reader)]:
    path = os.path.join(state, name)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(value)  # no trailing newline: the tests read these files verbatim
    os.chmod(path, 0o600)
print(f"vault-dev: seeded {addr} (secret/demo/web v1+v2, kv1/demo/legacy, avp-v1/*, kv/*; approle 'avp', userpass 'avp')")
PY
