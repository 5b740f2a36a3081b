"""Interop checks of the token service with real, unmodified clients: azure-identity (ManagedIdentityCredential and
DefaultAzureCredential over the App Service, Azure ML and IMDS protocols), MSAL Python's ManagedIdentityClient, an
azure-core pipeline with BearerTokenCredentialPolicy calling the emulated ARM over HTTPS, azure-ai-ml's MLClient,
and @azure/identity in Node.

Each scenario runs in a child process with exactly the environment variables that client reads (the SDKs read them
when a credential is built or a token is requested), so nothing leaks between scenarios. A token is checked by its
claims: the audience of the requested resource and the tenant of the credential the identity maps to; the emulated
ARM and upstream verify its signature.

    python token_service.py --endpoint http://127.0.0.1:PORT --secret-file FILE --emulator-json FILE \
        --tenant T --uami CLIENT_ID --uami-tenant T2 --blocked CLIENT_ID [--node-dir DIR]

Prints one PASS/FAIL line per check; exits 1 if any failed.
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import time

ARM = "https://management.azure.com"
ML = "https://ml.azure.com"

# Variables any Azure SDK might read to find a credential: removed from every child's environment.
SCRUB = ("AZURE_", "MSI_", "IDENTITY_", "IMDS_", "AZUREML_", "ARM_CLOUD", "DEFAULT_IDENTITY", "REQUESTS_CA", "SSL_CERT")


def claims(token):
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))


# === scenarios (run in a child process) ===


def scenario_credential(kind, scope, client_id=None):
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if kind == "mic":
        credential = ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    else:
        kwargs = {"managed_identity_client_id": client_id} if client_id else {}
        credential = DefaultAzureCredential(**kwargs)
    token = credential.get_token(scope)
    return {"claims": claims(token.token), "expires_on": token.expires_on, "now": int(time.time())}


def scenario_error(kind, scope, client_id):
    from azure.identity import ManagedIdentityCredential

    try:
        ManagedIdentityCredential(client_id=client_id).get_token(scope)
    except Exception as e:  # the SDK's own exception type and text are what is checked
        return {"exception": type(e).__name__, "text": str(e)}
    return {"exception": None}


def scenario_msal(resource, client_id=None):
    import msal
    import requests

    identity = msal.UserAssignedManagedIdentity(client_id=client_id) if client_id else msal.SystemAssignedManagedIdentity()
    client = msal.ManagedIdentityClient(identity, http_client=requests.Session())
    result = client.acquire_token_for_client(resource=resource)
    if "access_token" in result:
        return {"claims": claims(result["access_token"]), "token_source": result.get("token_source")}
    return {"error": result.get("error"), "error_description": result.get("error_description")}


def scenario_pipeline(arm, workspace_path, ca_file):
    from azure.core import PipelineClient
    from azure.core.pipeline.policies import BearerTokenCredentialPolicy, RetryPolicy
    from azure.core.rest import HttpRequest
    from azure.identity import ManagedIdentityCredential

    policy = BearerTokenCredentialPolicy(ManagedIdentityCredential(), ARM + "/.default")
    client = PipelineClient(base_url=arm, policies=[RetryPolicy(retry_total=0), policy], connection_verify=ca_file)
    response = client.send_request(HttpRequest("GET", arm + workspace_path, params={"api-version": "2024-04-01"}))
    return {"status": response.status_code, "body": response.json() if response.status_code == 200 else response.text()}


def scenario_mlclient(arm, subscription, resource_group, workspace, ca_file):
    """MLClient with DefaultAzureCredential: its ARM calls go to the emulated ARM (a transport whose session sends
    management.azure.com's requests to the loopback stand-in), its token comes from the token service."""
    import requests
    from requests.adapters import HTTPAdapter
    from azure.ai.ml import MLClient
    from azure.core.pipeline.transport import RequestsTransport
    from azure.identity import DefaultAzureCredential

    class ToLoopback(HTTPAdapter):
        def send(self, request, **kwargs):
            if request.url.startswith(ARM + "/"):
                request.url = arm + request.url[len(ARM):]
            kwargs["verify"] = ca_file
            return super().send(request, **kwargs)

    session = requests.Session()
    session.mount("https://", ToLoopback())
    seen = []

    class Recording(DefaultAzureCredential):
        def get_token(self, *scopes, **kwargs):
            token = super().get_token(*scopes, **kwargs)
            seen.append({"scopes": list(scopes), "claims": claims(token.token)})
            return token

        def get_token_info(self, *scopes, **kwargs):
            token = super().get_token_info(*scopes, **kwargs)
            seen.append({"scopes": list(scopes), "claims": claims(token.token)})
            return token

    ml_client = MLClient(
        Recording(),
        subscription_id=subscription,
        resource_group_name=resource_group,
        workspace_name=workspace,
        transport=RequestsTransport(session=session, session_owner=False),
    )
    ws = ml_client.workspaces.get(workspace)
    return {"name": ws.name, "tokens": seen}


SCENARIOS = {
    "credential": scenario_credential,
    "error": scenario_error,
    "msal": scenario_msal,
    "pipeline": scenario_pipeline,
    "mlclient": scenario_mlclient,
}


# === the parent: runs scenarios, checks results ===


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print("PASS [token-service] " + name)
        else:
            self.failed += 1
            print("FAIL [token-service] %s: %s" % (name, detail))


def run(env_extra, scenario, *args, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUB)}
    env.update(env_extra)
    proc = subprocess.run(
        [sys.executable, __file__, "--scenario", scenario, json.dumps(list(args))],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        return {"crashed": proc.stderr[-2000:]}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"crashed": proc.stdout[-1000:] + proc.stderr[-1000:]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--secret-file", required=True)
    p.add_argument("--emulator-json", required=True)
    p.add_argument("--tenant", required=True, help="tenant of the credential the default identity maps to")
    p.add_argument("--uami", required=True, help="a client id mapped to another credential")
    p.add_argument("--uami-tenant", required=True)
    p.add_argument("--blocked", required=True, help="a client id mapped to a credential Conditional Access blocks")
    p.add_argument("--node-dir", help="a directory holding node_modules/@azure/identity")
    a = p.parse_args()

    emulator = json.load(open(a.emulator_json))
    secret = open(a.secret_file).read().strip()
    msi = a.endpoint + "/msi/token"
    app_service = {"IDENTITY_ENDPOINT": msi, "IDENTITY_HEADER": secret}
    azure_ml = {"MSI_ENDPOINT": msi, "MSI_SECRET": secret}
    imds = {"AZURE_POD_IDENTITY_AUTHORITY_HOST": a.endpoint}
    # DefaultAzureCredential tries developer tools after managed identity; keep them from finding a signed-in user.
    dac = {"AZURE_TOKEN_CREDENTIALS": "prod"}
    c = Checks()

    def token_is(name, result, aud, tid):
        got = result.get("claims") or {}
        c.check(
            name,
            got.get("aud") == aud and got.get("tid") == tid and got.get("iss", "").startswith(emulator["authority_host"]),
            json.dumps(result)[:1500],
        )

    # azure-identity, each protocol, ManagedIdentityCredential and DefaultAzureCredential.
    for proto, env in (("App Service", app_service), ("Azure ML", azure_ml), ("IMDS", imds)):
        r = run(env, "credential", "mic", ARM + "/.default")
        token_is("azure-identity ManagedIdentityCredential over %s: the emulator's ARM token" % proto, r, ARM, a.tenant)
        if proto == "App Service":
            exp = (r.get("claims") or {}).get("exp", 0)
        c.check(
            "azure-identity: expires_on is the token's exp (counted from the token request, so at most seconds earlier)",
            0 <= exp - (r.get("expires_on") or 0) <= 5,
            json.dumps(r)[:500],
        )
        r = run(dict(env, **dac), "credential", "dac", ML + "/.default")
        token_is("azure-identity DefaultAzureCredential over %s: the emulator's Azure ML token" % proto, r, ML, a.tenant)

    # A user-assigned identity maps to its configured credential.
    for proto, env in (("App Service", app_service), ("Azure ML", azure_ml), ("IMDS", imds)):
        r = run(env, "credential", "mic", ARM + "/.default", a.uami)
        token_is("azure-identity ManagedIdentityCredential(client_id=…) over %s: the mapped credential's token" % proto, r, ARM, a.uami_tenant)
    r = run(dict(app_service, **dac), "credential", "dac", ARM + "/.default", a.uami)
    token_is("azure-identity DefaultAzureCredential(managed_identity_client_id=…): the mapped credential's token", r, ARM, a.uami_tenant)

    # MSAL Python's ManagedIdentityClient, each protocol.
    for proto, env in (("App Service", app_service), ("Azure ML", azure_ml), ("IMDS", imds)):
        r = run(env, "msal", ARM)
        token_is("MSAL ManagedIdentityClient over %s: the emulator's ARM token" % proto, r, ARM, a.tenant)
        r = run(env, "msal", ML, a.uami)
        token_is("MSAL ManagedIdentityClient(UserAssignedManagedIdentity) over %s: the mapped credential's token" % proto, r, ML, a.uami_tenant)

    # Conditional Access: the SDKs' error texts carry AADSTS53003 and Entra ID's ids.
    r = run(app_service, "error", "mic", ARM + "/.default", a.blocked)
    c.check(
        "azure-identity over App Service, Conditional Access: the exception text carries AADSTS53003",
        r.get("exception") is not None and "AADSTS53003" in r.get("text", "") and "Correlation ID" in r.get("text", ""),
        json.dumps(r)[:1500],
    )
    r = run(azure_ml, "error", "mic", ARM + "/.default", a.blocked)
    c.check(
        "azure-identity over Azure ML, Conditional Access: the exception text carries AADSTS53003",
        r.get("exception") is not None and "AADSTS53003" in r.get("text", ""),
        json.dumps(r)[:1500],
    )
    r = run(app_service, "msal", ARM, a.blocked)
    c.check(
        "MSAL over App Service, Conditional Access: error_description carries AADSTS53003 and the trace id",
        "AADSTS53003" in (r.get("error_description") or "") and "Trace ID" in (r.get("error_description") or ""),
        json.dumps(r)[:1500],
    )

    # azure-core pipeline with BearerTokenCredentialPolicy against the emulated ARM over HTTPS.
    ws = emulator["workspace"]
    r = run(app_service, "pipeline", emulator["resource_manager"], ws["id"], emulator["ca_file"])
    c.check(
        "azure-core BearerTokenCredentialPolicy + ManagedIdentityCredential: the emulated ARM (https) answers 200",
        r.get("status") == 200 and (r.get("body") or {}).get("name") == ws["name"],
        json.dumps(r)[:1500],
    )

    # azure-ai-ml MLClient with DefaultAzureCredential: its token from the token service.
    r = run(
        dict(app_service, **dac), "mlclient", emulator["resource_manager"], ws["subscription_id"], ws["resource_group"], ws["name"],
        emulator["ca_file"], timeout=180,
    )
    tokens = r.get("tokens") or []
    c.check(
        "azure-ai-ml MLClient(DefaultAzureCredential()): workspaces.get through the emulated ARM with the token service's token",
        r.get("name") == ws["name"] and tokens and all(t["claims"].get("tid") == a.tenant for t in tokens),
        json.dumps(r)[:1500],
    )

    # @azure/identity in Node over the App Service protocol.
    if a.node_dir:
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node", "token_service.cjs")
        env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUB)}
        env.update(app_service)
        env["NODE_PATH"] = os.path.join(a.node_dir, "node_modules")
        proc = subprocess.run(["node", script, ARM + "/.default"], env=env, capture_output=True, text=True, timeout=60)
        try:
            r = json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            r = {"crashed": proc.stdout[-800:] + proc.stderr[-800:]}
        token_is("@azure/identity (Node) ManagedIdentityCredential over App Service: the emulator's ARM token", r, ARM, a.tenant)

    print("token-service interop: %d passed, %d failed" % (c.passed, c.failed))
    sys.exit(1 if c.failed else 0)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--scenario":
        name, args = sys.argv[2], json.loads(sys.argv[3])
        print(json.dumps(SCENARIOS[name](*args)))
    else:
        main()
