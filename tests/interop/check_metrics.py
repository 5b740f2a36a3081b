"""Checks a live /metrics scrape taken after the interop clients ran (standard library only).

    python3 check_metrics.py METRICS_FILE MONITORING_DIR

1. The series the interop traffic must have produced are there, with plausible values.
2. Every `aml_auth_proxy_*` name used by the alerting rules, their tests and the Grafana dashboard in
   MONITORING_DIR is a metric the proxy really exports (histograms: with `_bucket`, `_sum` or `_count`).
"""
import pathlib
import re
import sys
import time

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    types, samples = {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            types[name] = kind
        elif line and not line.startswith("#"):
            m = SAMPLE.match(line)
            if not m:
                raise AssertionError(f"unparsable sample line: {line!r}")
            samples.append((m.group(1), dict(LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return types, samples


def value(samples, name, **labels):
    found = [v for n, l, v in samples if n == name and all(l.get(k) == v2 for k, v2 in labels.items())]
    return sum(found) if found else None


def main():
    metrics_file, monitoring = sys.argv[1], pathlib.Path(sys.argv[2])
    types, samples = parse(open(metrics_file, encoding="utf-8").read())
    problems = []

    def want(what, ok):
        if not ok:
            problems.append(what)

    arm_2xx = value(samples, "aml_auth_proxy_requests_total", route="arm", status_class="2xx")
    want(f"requests_total{{route=arm,2xx}} = {arm_2xx}, expected > 20", arm_2xx is not None and arm_2xx > 20)
    want("requests_total{route=scoring,4xx} (the 405s)",
         (value(samples, "aml_auth_proxy_requests_total", route="scoring", status_class="4xx") or 0) >= 1)
    want("requests_total{route=-,4xx} (the 421)",
         (value(samples, "aml_auth_proxy_requests_total", route="-", status_class="4xx") or 0) >= 1)
    want("requests_total{route=blocked,4xx} (the 403s)",
         (value(samples, "aml_auth_proxy_requests_total", route="blocked", status_class="4xx") or 0) >= 1)
    want("auth_failures_total{credential=blocked,code=ConditionalAccessBlocked}",
         (value(samples, "aml_auth_proxy_auth_failures_total", credential="blocked", code="ConditionalAccessBlocked") or 0) >= 1)
    want("token_requests_total{credential=sp,outcome=success} == 2",
         value(samples, "aml_auth_proxy_token_requests_total", credential="sp", outcome="success") == 2)
    expiry = value(samples, "aml_auth_proxy_token_expiry_seconds", credential="sp", scope="https://management.azure.com/.default")
    want(f"token_expiry_seconds for sp/ARM is a future Unix time ({expiry})",
         expiry is not None and time.time() < expiry < time.time() + 3700)
    arm_all = value(samples, "aml_auth_proxy_requests_total", route="arm")
    want("request_duration_seconds_count{route=arm} counts every arm request",
         value(samples, "aml_auth_proxy_request_duration_seconds_count", route="arm") == arm_all)
    want("upstream_duration_seconds_bucket{route=arm,le=+Inf}",
         (value(samples, "aml_auth_proxy_upstream_duration_seconds_bucket", route="arm", le="+Inf") or 0) >= 1)
    want("in_flight_requests == 0 once the clients are done", value(samples, "aml_auth_proxy_in_flight_requests") == 0)
    want("config_reload_failures_total == 0", value(samples, "aml_auth_proxy_config_reload_failures_total") == 0)
    for name, kind in types.items():
        want(f"{name}: counters end in _total", kind != "counter" or name.endswith("_total"))

    exported = set()
    for name, kind in types.items():
        exported.add(name)
        if kind == "histogram":
            exported |= {name + "_bucket", name + "_sum", name + "_count"}
    used = {}
    for path in sorted(monitoring.glob("*")):
        if path.suffix in (".yaml", ".yml", ".json"):
            for name in re.findall(r"\baml_auth_proxy_[a-z0-9_]+", path.read_text(encoding="utf-8")):
                used.setdefault(name, set()).add(path.name)
    want("the monitoring files use some aml_auth_proxy_ metrics", len(used) >= 5)
    for name, files in sorted(used.items()):
        want(f"{name} (used in {', '.join(sorted(files))}) is not exported by the proxy", name in exported)

    for p in problems:
        print(f"FAIL [metrics] {p}")
    print(f"metrics: {len(types)} families, {len(samples)} samples, {len(used)} names used by deploy/monitoring checked")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
