"""Real, unmodified Python clients against a running aml-auth-proxy (started by tests/interop/run.sh).

Each client is used the way a legacy tool would use it: plain HTTP to the proxy, no Azure authentication of
its own. aml-azure-emulator's upstream echoes what it received, the token as its verified claims (see
docs/emulator.md), so each check asserts what arrived upstream: the token came from the emulated Entra ID for the
route's scope, path, query and body are intact,
and long-running-operation URLs were rewritten to the proxy.

    python clients.py --proxy http://127.0.0.1:PORT --upstream https://127.0.0.1:PORT
"""
import argparse
import asyncio
import json
import sys
import time
import traceback
from urllib.parse import urlsplit

import httpx
import requests
from azure.core import PipelineClient
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.policies import (
    ContentDecodePolicy,
    HeadersPolicy,
    RedirectPolicy,
    RequestIdPolicy,
    RetryPolicy,
    UserAgentPolicy,
)
from azure.core.polling import LROPoller
from azure.core.polling.base_polling import LROBasePolling
from azure.core.rest import HttpRequest

ARM = "https://management.azure.com/.default"
ML = "https://ml.azure.com/.default"
WORKSPACE = "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"
CHECKS = []


def check(name):
    def register(fn):
        CHECKS.append((name, fn))
        return fn

    return register


def expect(condition, what):
    if not condition:
        raise AssertionError(what)


def mock_token(echo, scope):
    """The upstream accepted the request (200) with a token the emulated Entra ID issued for `scope`."""
    claims = echo["authorization"]["claims"]
    expect(claims["tid"] == "interop-tenant", f"token of tenant {claims['tid']!r}, not the interop credential's")
    audience = scope.removesuffix("/.default")
    expect(claims["aud"] == audience, f"token audience {claims['aud']!r}, expected {audience!r}")


# === requests (HTTP/1.1) ===


@check("requests: GET keeps path and encoded query, replaces the caller's Authorization")
def _(proxy, upstream):
    params = {"api-version": "2024-04-01", "$filter": "name eq 'a b'", "$top": "5"}
    r = requests.get(proxy + WORKSPACE + "/jobs", params=params, headers={"Authorization": "Bearer caller"}, timeout=20)
    expect(r.status_code == 200, f"status {r.status_code}: {r.text[:300]}")
    echo = r.json()
    mock_token(echo, ARM)
    expect(echo["path"] == WORKSPACE + "/jobs", echo["path"])
    expect(echo["query"] == urlsplit(r.request.url).query, f"{echo['query']!r} vs {urlsplit(r.request.url).query!r}")
    expect(echo["authority"] == urlsplit(upstream).netloc, f"authority {echo['authority']!r}: Host not rewritten")
    expect("x-forwarded-for" not in echo["headers"] or echo["headers"]["x-forwarded-for"], "x-forwarded-for")


@check("requests: POST JSON to the scoring route (prefix stripped, body intact, Azure ML scope)")
def _(proxy, upstream):
    payload = {"input_data": {"columns": ["a", "b"], "data": [[1, 2], [3, 4]]}, "note": "ünïcode"}
    r = requests.post(proxy + "/score/my-endpoint", json=payload, timeout=20)
    expect(r.status_code == 200, f"status {r.status_code}: {r.text[:300]}")
    echo = r.json()
    mock_token(echo, ML)
    expect(echo["path"] == "/score" and echo["method"] == "POST", echo)
    expect(json.loads(echo["body"]) == payload, echo["body"])


@check("requests: streamed server-sent events arrive as they are produced")
def _(proxy, upstream):
    with requests.get(proxy + "/stream?chunks=4&interval_ms=300", stream=True, timeout=20) as r:
        expect(r.status_code == 200 and r.headers["content-type"] == "text/event-stream", r.headers)
        arrivals = []
        for line in r.iter_lines():
            if line.startswith(b"data: "):
                arrivals.append((time.monotonic(), line))
    expect([l for _, l in arrivals] == [b"data: %d" % i for i in range(4)], arrivals)
    # The first event came long before the last was even produced: nothing buffered the stream.
    expect(arrivals[-1][0] - arrivals[0][0] > 0.6, f"all events arrived together: {arrivals}")


@check("requests: long-running operation URLs point back at the proxy and can be followed")
def _(proxy, upstream):
    r = requests.post(proxy + WORKSPACE + "/onlineEndpoints/e/lro", params={"api-version": "2024-04-01"}, timeout=20)
    expect(r.status_code == 202, f"status {r.status_code}: {r.text[:300]}")
    for name in ("Location", "Azure-AsyncOperation", "Operation-Location"):
        expect(r.headers[name].startswith(proxy + "/operations/1/"), f"{name}: {r.headers[name]}")
    status = requests.get(r.headers["Azure-AsyncOperation"], timeout=20)
    expect(status.status_code == 200 and status.json() == {"status": "Succeeded"}, status.text)
    final = requests.get(r.headers["Location"], timeout=20)
    expect(final.status_code == 200, final.text)
    mock_token(final.json(), ARM)
    expect(final.json()["path"] == "/operations/1/result", final.json()["path"])


@check("requests: the proxy's own errors are JSON with x-aml-auth-proxy-error")
def _(proxy, upstream):
    r = requests.get(proxy + "/score/my-endpoint", timeout=20)
    expect(r.status_code == 405 and r.headers["x-aml-auth-proxy-error"] == "MethodNotAllowed", (r.status_code, r.headers))
    expect(r.json()["error"]["code"] == "MethodNotAllowed", r.text)
    r = requests.get(proxy + "/blocked/models", timeout=20)
    expect(r.status_code == 403, r.status_code)
    error = r.json()["error"]
    expect(error["code"] == "ConditionalAccessBlocked" and error["aad"]["error_codes"] == [53003], error)
    expect(error["message"].startswith("AADSTS53003: Access has been blocked by Conditional Access policies."), error)


# === httpx (HTTP/2 with prior knowledge, and HTTP/1.1) ===


@check("httpx: HTTP/2 (h2c prior knowledge) GET, upstream reached over h2")
def _(proxy, upstream):
    with httpx.Client(http1=False, http2=True, timeout=20) as client:
        r = client.get(proxy + WORKSPACE, params={"api-version": "2024-04-01"})
    expect(r.http_version == "HTTP/2", r.http_version)
    expect(r.status_code == 200, f"status {r.status_code}: {r.text[:300]}")
    echo = r.json()
    mock_token(echo, ARM)
    expect(echo["path"] == WORKSPACE and echo["query"] == "api-version=2024-04-01", echo)
    expect(echo["version"] == "HTTP/2.0", echo["version"])


@check("httpx: 50 concurrent HTTP/2 streams on one connection, one token")
def _(proxy, upstream):
    async def burst():
        async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as client:
            return await asyncio.gather(*(client.get(f"{proxy}/subscriptions/sub-{i}") for i in range(50)))

    answers = asyncio.run(burst())
    expect(all(r.status_code == 200 and r.http_version == "HTTP/2" for r in answers), [r.status_code for r in answers])
    expect({r.json()["path"] for r in answers} == {f"/subscriptions/sub-{i}" for i in range(50)}, "paths mixed up")
    expect(len({r.json()["authorization"]["claims"]["uti"] for r in answers}) == 1, "more than one token for one scope")


@check("httpx: HTTP/2 POST and streaming")
def _(proxy, upstream):
    with httpx.Client(http1=False, http2=True, timeout=20) as client:
        r = client.post(proxy + "/score/my-endpoint", json={"x": [1, 2]})
        expect(r.status_code == 200 and r.http_version == "HTTP/2", (r.status_code, r.http_version))
        mock_token(r.json(), ML)
        expect(json.loads(r.json()["body"]) == {"x": [1, 2]}, r.json()["body"])
        with client.stream("GET", proxy + "/stream?chunks=3&interval_ms=50") as s:
            lines = [l for l in s.iter_lines() if l.startswith("data: ")]
    expect(lines == ["data: 0", "data: 1", "data: 2"], lines)


@check("httpx: HTTP/1.1 client")
def _(proxy, upstream):
    r = httpx.get(proxy + "/subscriptions", params={"api-version": "2022-12-01"}, timeout=20)
    expect(r.http_version == "HTTP/1.1" and r.status_code == 200, (r.http_version, r.status_code))
    mock_token(r.json(), ARM)


# === azure-core PipelineClient, no authentication policy ===


def pipeline_client(proxy):
    # The policies a generated Azure SDK client runs, minus BearerTokenCredentialPolicy: the proxy authenticates.
    return PipelineClient(
        base_url=proxy,
        policies=[
            RequestIdPolicy(),
            HeadersPolicy(),
            UserAgentPolicy(base_user_agent="aml-auth-proxy-interop"),
            ContentDecodePolicy(),
            RedirectPolicy(),
            RetryPolicy(retry_total=0),
        ],
    )


def send(client, request, **kwargs):
    # What generated clients do before sending: resolve the path against the client's base URL.
    request.url = client.format_url(request.url)
    return client.send_request(request, **kwargs)


@check("azure-core: PipelineClient GET through the proxy")
def _(proxy, upstream):
    with pipeline_client(proxy) as client:
        r = send(client, HttpRequest("GET", WORKSPACE, params={"api-version": "2024-04-01"}))
        r.raise_for_status()
        echo = r.json()
    mock_token(echo, ARM)
    expect(echo["path"] == WORKSPACE and echo["query"] == "api-version=2024-04-01", echo)
    expect(echo["headers"]["user-agent"].startswith("aml-auth-proxy-interop"), echo["headers"]["user-agent"])
    expect(echo["headers"].get("x-ms-client-request-id"), "x-ms-client-request-id did not reach the upstream")


@check("azure-core: LROPoller with LROBasePolling follows the rewritten URLs to the result")
def _(proxy, upstream):
    with pipeline_client(proxy) as client:
        request = HttpRequest(
            "POST",
            WORKSPACE + "/onlineEndpoints/e/lro",
            params={"api-version": "2024-04-01"},
            json={"properties": {"description": "interop"}},
        )
        initial = send(client, request, _return_pipeline_response=True)
        expect(initial.http_response.status_code == 202, initial.http_response.status_code)
        poller = LROPoller(client, initial, lambda response: response.http_response.json(), LROBasePolling(timeout=0))
        result = poller.result(timeout=30)
    expect(poller.status() == "Succeeded", poller.status())
    mock_token(result, ARM)
    expect(result["method"] == "GET" and result["path"] == "/operations/1/result", result)


@check("azure-core: HttpResponseError parses the proxy's ARM-style error body")
def _(proxy, upstream):
    with pipeline_client(proxy) as client:
        r = send(client, HttpRequest("GET", "/blocked/models"))
    expect(r.status_code == 403, r.status_code)
    error = HttpResponseError(response=r)
    expect(error.error is not None and error.error.code == "ConditionalAccessBlocked", error.error)
    expect("AADSTS53003" in error.error.message, error.error.message)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--proxy", required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    passed = failed = 0
    for name, fn in CHECKS:
        started = time.monotonic()
        try:
            fn(args.proxy, args.upstream)
        except Exception as e:  # a failed check, whatever raised
            failed += 1
            print(f"FAIL [python] {name}: {type(e).__name__}: {str(e)[:600]}", flush=True)
            traceback.print_exc(limit=3)
        else:
            passed += 1
            print(f"PASS [python] {name} ({time.monotonic() - started:.1f}s)", flush=True)
    print(f"python clients: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
