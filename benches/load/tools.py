#!/usr/bin/env python3
"""Helpers for benches/load/run.sh (Python 3 standard library only).

Subcommands (all loopback only):
  freeport [N]                      print N free TCP ports on 127.0.0.1
  pids PID                          PID and all its descendants (an nginx master and its workers)
  cpu PID...                        utime+stime of the processes, in seconds (from /proc/PID/stat)
  cpu-sys PID...                    stime (kernel time) of the processes, in seconds
  mem PID...                        {"rss_kib","hwm_kib","pss_kib"} summed over the processes
  reset-hwm PID...                  reset VmHWM (peak RSS) to the current RSS (/proc/PID/clear_refs)
  wait-tcp PORT SECONDS             wait until 127.0.0.1:PORT accepts a connection
  wait-line FILE SECONDS            wait until FILE holds a complete first line, print it
  json-get KEY                      read a JSON object on stdin, print its KEY
  sink PORT                         HTTP/1.1 upload sink: reads and discards every request body, then 200
  idle PORT N CONC HOLD MARK        open N keep-alive connections (one request each, CONC at a time), write
                                    MARK, hold them HOLD seconds, send a second request on each, print JSON
  startup RUNS BIN CONFIG           exec-to-accept and exec-to-ready times of the proxy, JSON
  record FILE key=value... [--wrk OUT] [--oha JSON] [--h2load OUT]
                                    append one JSON result line to FILE
  median FILE FIELD key=value...    median of FIELD over the result lines matching every key=value
"""

import asyncio
import http.client
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CLK_TCK = os.sysconf("SC_CLK_TCK")


def freeport(n=1):
    socks = []
    for _ in range(int(n)):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def _children():
    kids = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def pids(root):
    kids = _children()
    out, todo = [], [int(root)]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    print(" ".join(map(str, out)))


def _ticks(ps, user=True):
    total = 0
    for p in ps:
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) if user else 0) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total


def cpu(*ps):
    print(f"{_ticks(ps) / CLK_TCK:.3f}")


def cpu_sys(*ps):
    print(f"{_ticks(ps, user=False) / CLK_TCK:.3f}")


def _status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def mem(*ps):
    print(json.dumps({
        "rss_kib": sum(_status_kib(p, "VmRSS") for p in ps),
        "hwm_kib": sum(_status_kib(p, "VmHWM") for p in ps),
        "pss_kib": sum(_pss_kib(p) for p in ps),
    }))


def reset_hwm(*ps):
    for p in ps:
        with open(f"/proc/{p}/clear_refs", "w") as f:
            f.write("5")


def wait_tcp(port, seconds):
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()
            return 0
        except OSError:
            time.sleep(0.02)
    print(f"127.0.0.1:{port} did not accept connections within {seconds}s", file=sys.stderr)
    return 1


def wait_line(path, seconds):
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                line = f.readline()
            if line.endswith("\n"):
                print(line, end="")
                return 0
        except OSError:
            pass
        time.sleep(0.02)
    print(f"no line in {path} within {seconds}s", file=sys.stderr)
    return 1


def json_get(key):
    print(json.load(sys.stdin)[key])


# ---------------------------------------------------------------- upload sink

class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    buf = None

    def log_message(self, *args):  # quiet
        pass

    def _drain(self):
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        n = 0
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return n
                left = size
                while left:
                    got = self.rfile.readinto(view[: min(left, len(buf))])
                    if not got:
                        raise ConnectionError("body ended early")
                    left -= got
                n += size
                self.rfile.readline()
        left = int(self.headers.get("Content-Length") or 0)
        while left:
            got = self.rfile.readinto(view[: min(left, len(buf))])
            if not got:
                raise ConnectionError("body ended early")
            left -= got
            n += got
        return n

    def _answer(self):
        n = self._drain()
        body = json.dumps({"received": n}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_PUT = do_POST = do_GET = _answer


def sink(port):
    server = ThreadingHTTPServer(("127.0.0.1", int(port)), _Sink)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()


# ---------------------------------------------------------------- idle keep-alive connections

def _raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


async def _one_request(reader, writer, port):
    writer.write(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    if not m:
        raise ValueError("response without Content-Length")
    await reader.readexactly(int(m.group(1)))
    return status


async def _idle(port, n, conc, hold, mark):
    sem = asyncio.Semaphore(conc)
    conns, first_ok = [], 0

    async def open_one():
        nonlocal first_ok
        async with sem:
            try:
                r, w = await asyncio.open_connection("127.0.0.1", port)
                conns.append((r, w))
                if await _one_request(r, w, port) == 200:
                    first_ok += 1
            except (OSError, ValueError, asyncio.IncompleteReadError) as e:
                print(f"idle: connection failed: {e!r}", file=sys.stderr)

    t0 = time.monotonic()
    await asyncio.gather(*(open_one() for _ in range(n)))
    opened_s = time.monotonic() - t0
    with open(mark, "w") as f:
        f.write(f"{first_ok}\n")
    await asyncio.sleep(hold)

    async def again(r, w):
        try:
            return await asyncio.wait_for(_one_request(r, w, port), 10) == 200
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            return False

    alive = 0
    for i in range(0, len(conns), conc):
        alive += sum(await asyncio.gather(*(again(r, w) for r, w in conns[i : i + conc])))
    for _, w in conns:
        w.close()
    print(json.dumps({"connections": n, "opened": len(conns), "first_ok": first_ok,
                      "still_alive_after_hold": alive, "open_seconds": round(opened_s, 3)}))


def idle(port, n, conc, hold, mark):
    _raise_nofile()
    asyncio.run(_idle(int(port), int(n), int(conc), float(hold), mark))


# ---------------------------------------------------------------- start-up time

def _free_ports(k):
    socks = [socket.socket() for _ in range(k)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _ready(port):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        c.request("GET", "/readyz")
        ok = c.getresponse().status == 200
        c.close()
        return ok
    except OSError:
        return False


def startup(runs, binary, config):
    runs = int(runs)
    accept, ready = [], []
    log = open(os.devnull, "wb")
    for i in range(runs + 1):  # the first run only warms the page cache
        port, admin = _free_ports(2)
        argv = [binary, "run", "--config", config, "--listen", f"127.0.0.1:{port}",
                "--admin-listen", f"127.0.0.1:{admin}", "--log-format", "json"]
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=log, stderr=log)
        t_accept = None
        deadline = t0 + 10
        while time.perf_counter() < deadline:
            s = socket.socket()
            try:
                s.connect(("127.0.0.1", port))
                t_accept = time.perf_counter() - t0
                break
            except OSError:
                time.sleep(0.001)
            finally:
                s.close()
        t_ready = None
        while t_accept is not None and time.perf_counter() < deadline:
            if _ready(admin):
                t_ready = time.perf_counter() - t0
                break
            time.sleep(0.001)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if t_accept is None or t_ready is None:
            print(f"startup: run {i} did not accept/become ready within 10 s", file=sys.stderr)
            return 1
        if i > 0:
            accept.append(t_accept * 1000)
            ready.append(t_ready * 1000)
    print(json.dumps({
        "runs": runs,
        "accept_ms": [round(x, 2) for x in accept],
        "ready_ms": [round(x, 2) for x in ready],
        "accept_ms_median": round(statistics.median(accept), 2),
        "ready_ms_median": round(statistics.median(ready), 2),
    }))
    return 0


# ---------------------------------------------------------------- results

def _parse_wrk(path):
    with open(path) as f:
        text = f.read()
    for line in text.splitlines():
        if line.startswith("WRKJSON "):
            d = json.loads(line[len("WRKJSON "):])
            d["errors"] = (d["connect_errors"] + d["read_errors"] + d["write_errors"]
                           + d["status_errors"] + d["timeouts"])
            d["rps"] = d["requests"] / (d["duration_us"] / 1e6) if d["duration_us"] else 0.0
            return d
    raise SystemExit(f"no WRKJSON line in {path}:\n{text}")


def _parse_oha(path):
    with open(path) as f:
        o = json.load(f)
    summary = o.get("summary", {})
    pct = o.get("latencyPercentiles", {})
    codes = o.get("statusCodeDistribution", {}) or {}
    errs = o.get("errorDistribution", {}) or {}
    ok = sum(v for k, v in codes.items() if str(k).startswith("2"))
    non2xx = sum(v for k, v in codes.items() if not str(k).startswith("2"))
    # A request cut off by the end of the run (-z) is not a failure of the server.
    errors = non2xx + sum(v for k, v in errs.items() if "deadline" not in k)

    def us(key):
        v = pct.get(key)
        return None if v is None else round(v * 1e6, 1)

    return {
        "requests": ok + non2xx, "rps": summary.get("requestsPerSec"),
        "errors": errors, "error_kinds": errs, "status_codes": codes,
        "lat_mean_us": None if summary.get("average") is None else round(summary["average"] * 1e6, 1),
        "p50_us": us("p50"), "p90_us": us("p90"), "p99_us": us("p99"), "p999_us": us("p99.9"),
        "lat_max_us": None if summary.get("slowest") is None else round(summary["slowest"] * 1e6, 1),
    }


def _h2_seconds(value, unit):
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]


def _parse_h2load(path):
    with open(path) as f:
        text = f.read()
    d = {}
    m = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", text)
    if not m:
        raise SystemExit(f"cannot parse h2load output {path}:\n{text}")
    d["rps"] = float(m.group(3))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", text)
    d["requests"] = int(m.group(3))
    d["succeeded"] = int(m.group(4))
    d["errors"] = int(m.group(5)) + int(m.group(6)) + int(m.group(7))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    d["errors"] += int(m.group(3)) + int(m.group(4))
    m = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", text)
    if m:
        d["lat_min_us"] = round(_h2_seconds(m.group(1), m.group(2)) * 1e6, 1)
        d["lat_max_us"] = round(_h2_seconds(m.group(3), m.group(4)) * 1e6, 1)
        d["lat_mean_us"] = round(_h2_seconds(m.group(5), m.group(6)) * 1e6, 1)
    m = re.search(r"Application protocol: (\S+)", text)
    d["protocol"] = m.group(1) if m else None
    return d


def _value(v):
    try:
        return json.loads(v)
    except ValueError:
        return v


def record(path, *args):
    rec, it = {}, iter(args)
    for a in it:
        if a == "--wrk":
            rec.update(_parse_wrk(next(it)))
        elif a == "--oha":
            rec.update(_parse_oha(next(it)))
        elif a == "--h2load":
            rec.update(_parse_h2load(next(it)))
        else:
            k, _, v = a.partition("=")
            rec[k] = _value(v)
    # Derived per-request CPU and memory (MiB).
    if rec.get("requests") and "cpu0" in rec and "cpu1" in rec:
        rec["cpu_us_per_req"] = round((rec["cpu1"] - rec["cpu0"]) / rec["requests"] * 1e6, 2)
    if rec.get("requests") and "sys0" in rec and "sys1" in rec:
        rec["sys_us_per_req"] = round((rec["sys1"] - rec["sys0"]) / rec["requests"] * 1e6, 2)
    if rec.get("requests") and "up_cpu0" in rec and "up_cpu1" in rec:
        rec["upstream_cpu_us_per_req"] = round((rec["up_cpu1"] - rec["up_cpu0"]) / rec["requests"] * 1e6, 2)
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")
    shown = {k: rec.get(k) for k in ("rps", "p50_us", "p99_us", "p999_us", "errors", "cpu_us_per_req") if k in rec}
    print("   " + " ".join(f"{k}={round(v, 1) if isinstance(v, float) else v}" for k, v in shown.items()))


def median(path, field, *filters):
    want = dict(f.partition("=")[::2] for f in filters)
    vals = []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if all(str(r.get(k)) == v for k, v in want.items()) and r.get(field) is not None:
                vals.append(r[field])
    if not vals:
        print(f"no result lines match {want}", file=sys.stderr)
        return 1
    print(statistics.median(vals))
    return 0


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 64
    cmd, args = sys.argv[1].replace("-", "_"), sys.argv[2:]
    fn = globals().get(cmd)
    if not callable(fn) or cmd.startswith("_"):
        print(__doc__)
        return 64
    return fn(*args) or 0


if __name__ == "__main__":
    sys.exit(main())
