#!/usr/bin/env python3
"""Generates synthetic.om, the differential-test fixture.

Deterministic (no randomness): rerunning it reproduces the file byte for byte.
Data covers T0 .. T0+5400 s (1h30m) with T0 = 1700000000 (2023-11-14T22:13:20Z).
Usage: python3 gen_synthetic.py > synthetic.om
"""
import math

T0 = 1700000000
END = T0 + 5400
out = []


def fmt(v):
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "+Inf" if v > 0 else "-Inf"
        if v == int(v) and abs(v) < 1e15:
            return str(int(v))
        return repr(v)
    return str(v)


def labels(d):
    if not d:
        return ""
    return "{" + ",".join('%s="%s"' % (k, v) for k, v in d.items()) + "}"


def series(name, lbls, points):
    """points: iterable of (ts seconds (int or float), value)"""
    ls = labels(lbls)
    for t, v in points:
        ts = ("%.3f" % t).rstrip("0").rstrip(".") if isinstance(t, float) else str(t)
        out.append("%s%s %s %s" % (name, ls, fmt(v), ts))


def grid(step, start=T0, end=END):
    t = start
    while t <= end:
        yield t
        t += step


def counter(rate, step=30, start=T0, end=END, base=0.0, wobble=0.0):
    v = base
    pts = []
    for i, t in enumerate(grid(step, start, end)):
        if i:
            v += rate * step * (1 + wobble * math.sin(i / 7.0))
        pts.append((t, round(v, 6)))
    return pts


P = {"instance": "localhost:9090", "job": "prometheus"}
N = {"instance": "localhost:9100", "job": "node"}

# up: node exporter down for 10 minutes.
series("up", P, [(t, 1) for t in grid(30)])
series("up", N, [(t, 0 if T0 + 1800 <= t < T0 + 2400 else 1) for t in grid(30)])

# prometheus_http_requests_total
for handler, code, rate, wob in [
    ("/-/ready", "200", 0.1, 0.0),
    ("/api/v1/query", "200", 2.5, 0.3),
    ("/api/v1/query", "400", 0.05, 0.9),
    ("/api/v1/query_range", "200", 1.2, 0.5),
    ("/metrics", "200", 0.0667, 0.0),
]:
    pts = counter(rate, wobble=wob, base=100.0)
    if handler == "/api/v1/query_range":
        # A counter reset (restart) at T0+3000.
        pts = [(t, v if t < T0 + 3000 else round(v - pts[100][1] + 0.0, 6)) for t, v in pts]
        pts = [(t, v if t < T0 + 3000 else round((t - (T0 + 3000)) * 1.2, 6)) for t, v in pts]
    series("prometheus_http_requests_total", dict(code=code, handler=handler, **P), pts)

# prometheus_http_request_duration_seconds histogram.
bounds = ["0.1", "0.2", "0.4", "1", "3", "8", "20", "60", "120", "+Inf"]
for handler, scale in [("/api/v1/query", 1.0), ("/metrics", 0.2)]:
    fracs = [0.30, 0.55, 0.75, 0.88, 0.95, 0.98, 0.995, 0.999, 1.0, 1.0]
    for le, fr in zip(bounds, fracs):
        pts = []
        for i, t in enumerate(grid(30)):
            total = i * 3.0 * scale * (1 + 0.2 * math.sin(i / 5.0)) if i else 0.0
            total = math.floor(i * 3.0 * scale)
            pts.append((t, float(math.floor(total * fr))))
        series("prometheus_http_request_duration_seconds_bucket", dict(handler=handler, le=le, **P), pts)
    series("prometheus_http_request_duration_seconds_sum", dict(handler=handler, **P),
           [(t, round(i * 3.0 * scale * 0.35, 6)) for i, t in enumerate(grid(30))])
    series("prometheus_http_request_duration_seconds_count", dict(handler=handler, **P),
           [(t, float(math.floor(i * 3.0 * scale))) for i, t in enumerate(grid(30))])

# node_cpu_seconds_total at 15 s.
for cpu in ["0", "1"]:
    for mode, share in [("idle", 0.7), ("iowait", 0.02), ("system", 0.08), ("user", 0.2)]:
        c = 1.0 + int(cpu) * 0.1
        series("node_cpu_seconds_total", dict(cpu=cpu, mode=mode, **N),
               counter(share * c, step=15, base=12345.6 * share, wobble=0.25))

# process_cpu_seconds_total
series("process_cpu_seconds_total", P, counter(0.03, base=50.0, wobble=0.5))
series("process_cpu_seconds_total", N, counter(0.005, base=7.0, wobble=0.2))

# Memory gauges.
series("node_memory_MemTotal_bytes", N, [(t, 16776314880) for t in grid(30)])
series("node_memory_MemAvailable_bytes", N,
       [(t, 8000000000 + int(1500000000 * math.sin(i / 20.0))) for i, t in enumerate(grid(30))])
for j, lb in [(P, 210000000), (N, 22000000)]:
    series("process_resident_memory_bytes", j,
           [(t, lb + int(lb * 0.1 * math.sin(i / 9.0))) for i, t in enumerate(grid(30))])
for j, base in [(P, 40), (N, 8)]:
    series("go_goroutines", j, [(t, base + (i * 7) % 5) for i, t in enumerate(grid(30))])
series("prometheus_tsdb_head_series", P, [(t, 1200 + i // 3) for i, t in enumerate(grid(30))])

# Filesystems.
for dev, mp, size in [("/dev/sda1", "/", 100000000000), ("tmpfs", "/run", 1600000000)]:
    fs = dict(device=dev, fstype="ext4" if dev != "tmpfs" else "tmpfs", mountpoint=mp, **N)
    series("node_filesystem_size_bytes", fs, [(t, size) for t in grid(30)])
    series("node_filesystem_avail_bytes", fs,
           [(t, size // 2 - i * 1000000) for i, t in enumerate(grid(30))])

# --- synthetic series -------------------------------------------------------
# A counter with a reset at T0+2700.
series("synthetic_counter_total", {"case": "reset"},
       [(t, (t - T0) * 2.0 if t < T0 + 2700 else (t - T0 - 2700) * 2.0 + 1.0) for t in grid(30)])
# A counter that starts late at a small value (zero-point clamp of increase()).
series("synthetic_counter_total", {"case": "late_start"},
       [(t, 3.0 + (t - T0 - 2010) * 0.5) for t in grid(30, T0 + 2010)])
# Irregular scrape timestamps (ms jitter) for extrapolation thresholds.
jit = []
t = float(T0)
i = 0
while t <= END:
    jit.append((round(t, 3), round(i * 1.7 + (i % 3) * 0.4, 6)))
    i += 1
    t += 15 + [0.0, 3.25, -2.5, 7.75, -4.125][i % 5]
series("synthetic_counter_total", {"case": "jitter"}, jit)
# A sparse counter: one sample every 2 minutes, and a gap of 7 minutes.
series("synthetic_counter_total", {"case": "sparse"},
       [(t, (t - T0) * 0.25) for t in grid(120) if not (T0 + 3000 < t < T0 + 3420)])

# A gauge with a gap longer than the lookback delta.
series("synthetic_gauge", {"case": "gap"},
       [(t, 10 + (i % 7)) for i, t in enumerate(grid(30)) if not (T0 + 2400 <= t < T0 + 3600)])
# NaN and infinities.
series("synthetic_gauge", {"case": "nan"},
       [(t, float("nan") if i % 6 == 0 else float(i % 11)) for i, t in enumerate(grid(30))])
series("synthetic_gauge", {"case": "inf"},
       [(t, float("inf") if i % 9 == 0 else (float("-inf") if i % 13 == 0 else i * 0.5)) for i, t in enumerate(grid(30))])
series("synthetic_gauge", {"case": "neg"},
       [(t, round(-3.5 + 7.25 * math.sin(i / 4.0), 6)) for i, t in enumerate(grid(30))])
series("synthetic_gauge", {"case": "frac"},
       [(t, round(i * 0.25 - 20.5, 6)) for i, t in enumerate(grid(30))])
# Ties for topk/bottomk.
for inst, v in [("a", 5), ("b", 5), ("c", 7), ("d", 5), ("e", 1)]:
    series("synthetic_ties", {"instance": inst}, [(t, v) for t in grid(30)])

# A classic histogram with a +Inf bucket whose counts are briefly non-monotonic,
# and one without +Inf (histogram_quantile gives NaN).
hb = ["0.5", "1", "2.5", "5", "+Inf"]
for i_le, le in enumerate(hb):
    pts = []
    for i, t in enumerate(grid(30)):
        cum = [i * 1.0, i * 3.0, i * 4.0, i * 4.5, i * 5.0][i_le]
        if le == "2.5" and T0 + 1500 <= t < T0 + 1800:
            cum = i * 2.5  # lower than the "1" bucket: monotonicity fix-up.
        pts.append((t, cum))
    series("synthetic_histogram_bucket", {"case": "ok", "le": le}, pts)
for le in ["1", "5"]:
    series("synthetic_histogram_bucket", {"case": "noinf", "le": le},
           [(t, i * float(le)) for i, t in enumerate(grid(30))])
# Only +Inf: quantile of a single bucket is NaN.
series("synthetic_histogram_bucket", {"case": "onlyinf", "le": "+Inf"}, [(t, i * 1.0) for i, t in enumerate(grid(30))])

# Vector matching: info metric and usage metric.
for pod, node in [("p1", "n1"), ("p2", "n1"), ("p3", "n2")]:
    series("synthetic_info", {"node": node, "pod": pod}, [(t, 1) for t in grid(30)])
    for c, k in [("c1", 1.0), ("c2", 2.5)]:
        series("synthetic_usage", {"container": c, "pod": pod},
               [(t, round(k * (1 + int(pod[1:])) + math.sin(i / 6.0), 6)) for i, t in enumerate(grid(30))])
# Duplicates on the "one" side (many-to-many errors).
for x in ["1", "2"]:
    series("synthetic_dup", {"pod": "p1", "x": x}, [(t, int(x)) for t in grid(30)])
# Label values for label_replace / label_join.
series("synthetic_labels", {"path": "/api/v1/query", "src": "a-b-c", "team": "core"}, [(t, 1) for t in grid(30)])
series("synthetic_labels", {"path": "/metrics", "src": "x", "team": "infra"}, [(t, 2) for t in grid(30)])

# --- kubernetes: cAdvisor and kube-state-metrics series for mixin.txt -------
KSM = {"instance": "10.0.0.9:8080", "job": "kube-state-metrics"}
nodes = ["node-a", "node-b"]
pods = [
    # namespace, pod, node, owner replicaset (or None), phase, containers
    ("shop", "web-7d9f-abcde", "node-a", "web-7d9f", "Running", ["web", "sidecar"]),
    ("shop", "web-7d9f-fghij", "node-b", "web-7d9f", "Running", ["web", "sidecar"]),
    ("shop", "db-0", "node-a", None, "Running", ["postgres"]),
    ("batch", "job-x-1", "node-b", None, "Pending", ["worker"]),
    ("batch", "crash-5c4-zz", "node-b", "crash-5c4", "Running", ["app"]),
]
series("up", {"instance": "10.0.0.9:8080", "job": "kube-state-metrics"}, [(t, 1) for t in grid(30)])
for n in nodes:
    series("up", {"instance": n, "job": "kubelet", "metrics_path": "/metrics/cadvisor"},
           [(t, 0 if n == "node-b" and T0 + 4200 <= t < T0 + 4500 else 1) for t in grid(30)])
    for res, v in [("cpu", 4), ("memory", 16e9), ("pods", 110)]:
        series("kube_node_status_allocatable", dict(node=n, resource=res, unit="core" if res == "cpu" else "byte", **KSM),
               [(t, v * (0.95 if n == "node-b" else 1.0)) for t in grid(30)])
        series("kube_node_status_capacity", dict(node=n, resource=res, unit="core" if res == "cpu" else "byte", **KSM),
               [(t, v) for t in grid(30)])
    for status in ["true", "false", "unknown"]:
        def ready(i, t, n=n, status=status):
            up_ = not (n == "node-b" and (T0 + 2000 <= t < T0 + 2300 or T0 + 2600 <= t < T0 + 2700))
            return 1 if (status == "true") == up_ and status != "unknown" else 0
        series("kube_node_status_condition", dict(condition="Ready", node=n, status=status, **KSM),
               [(t, ready(i, t)) for i, t in enumerate(grid(30))])
for ns, pod, node, rs, phase, ctrs in pods:
    series("kube_pod_info", dict(host_ip="10.0.1.1", namespace=ns, node=node, pod=pod, **KSM), [(t, 1) for t in grid(30)])
    for ph in ["Pending", "Running", "Succeeded", "Failed", "Unknown"]:
        series("kube_pod_status_phase", dict(namespace=ns, phase=ph, pod=pod, **KSM),
               [(t, 1 if ph == phase else 0) for t in grid(30)])
    if rs:
        series("kube_pod_owner", dict(namespace=ns, owner_is_controller="true", owner_kind="ReplicaSet", owner_name=rs, pod=pod, **KSM),
               [(t, 1) for t in grid(30)])
    else:
        kind = "StatefulSet" if pod == "db-0" else "Job"
        series("kube_pod_owner", dict(namespace=ns, owner_is_controller="true", owner_kind=kind, owner_name=pod.rsplit("-", 1)[0], pod=pod, **KSM),
               [(t, 1) for t in grid(30)])
    for ci, c in enumerate(ctrs):
        k = 1 + ci + len(pod) % 3
        cl = dict(container=c, namespace=ns, pod=pod)
        series("kube_pod_container_resource_requests", dict(cl, node=node, resource="cpu", unit="core", **KSM), [(t, 0.25 * k) for t in grid(30)])
        series("kube_pod_container_resource_requests", dict(cl, node=node, resource="memory", unit="byte", **KSM), [(t, 2.5e8 * k) for t in grid(30)])
        series("kube_pod_container_resource_limits", dict(cl, node=node, resource="memory", unit="byte", **KSM), [(t, 5e8 * k) for t in grid(30)])
        restarts = [(t, (i // 20) if pod.startswith("crash") else 0) for i, t in enumerate(grid(30))]
        series("kube_pod_container_status_restarts_total", dict(cl, **KSM), restarts)
        series("kube_pod_container_status_waiting_reason", dict(cl, reason="CrashLoopBackOff", **KSM),
               [(t, 1 if pod.startswith("crash") and (i // 10) % 2 == 1 else 0) for i, t in enumerate(grid(30))])
        if phase != "Running":
            continue
        # (no id/name labels: kube-insight drops cAdvisor's, see the README)
        cad = dict(container=c, image="registry/" + c + ":1", instance=node,
                   job="kubelet", metrics_path="/metrics/cadvisor", namespace=ns, pod=pod)
        series("container_cpu_usage_seconds_total", cad, counter(0.05 * k, step=15, base=100.0 * k, wobble=0.6))
        series("container_memory_working_set_bytes", cad,
               [(t, int(2e8 * k + 3e7 * math.sin(i / 11.0 + k))) for i, t in enumerate(grid(15))])
        series("container_memory_rss", cad, [(t, int(1.5e8 * k)) for t in grid(15)])
        series("container_cpu_cfs_periods_total", cad, counter(10.0, step=15, base=0.0))
        series("container_cpu_cfs_throttled_periods_total", cad, counter(10.0 * (0.4 if pod.startswith("crash") else 0.05) * k / 3, step=15, base=0.0, wobble=0.3))
    # The pause container cAdvisor reports without an image.
    if phase == "Running":
        series("container_cpu_usage_seconds_total", dict(container="", image="", instance=node, job="kubelet",
               metrics_path="/metrics/cadvisor", namespace=ns, pod=pod), counter(0.3, step=15, base=500.0))
for rs, dep in [("web-7d9f", "web"), ("crash-5c4", "crash")]:
    series("kube_replicaset_owner", dict(namespace="shop" if dep == "web" else "batch", owner_is_controller="true", owner_kind="Deployment",
           owner_name=dep, replicaset=rs, **KSM), [(t, 1) for t in grid(30)])
for ns, dep, spec in [("shop", "web", 3), ("batch", "crash", 1)]:
    d = dict(deployment=dep, namespace=ns, **KSM)
    series("kube_deployment_spec_replicas", d, [(t, spec) for t in grid(30)])
    series("kube_deployment_status_replicas_available", d,
           [(t, spec - 1 if (dep == "web" and t >= T0 + 1800) or dep == "crash" and (i // 10) % 2 == 1 else spec) for i, t in enumerate(grid(30))])
    series("kube_deployment_status_replicas_updated", d, [(t, spec if t < T0 + 1200 or dep == "crash" else spec - 1) for t in grid(30)])
    series("kube_deployment_metadata_generation", d, [(t, 4 if t < T0 + 3000 else 5) for t in grid(30)])
    series("kube_deployment_status_observed_generation", d, [(t, 4 if t < T0 + 3300 or dep == "crash" else 5) for t in grid(30)])
for pvc, avail0, drain in [("data-db-0", 40e9, 4e6), ("cache", 9e9, 0.0)]:
    v = dict(instance="node-a", job="kubelet", metrics_path="/metrics", namespace="shop", persistentvolumeclaim=pvc)
    series("kubelet_volume_stats_capacity_bytes", v, [(t, 50e9 if pvc != "cache" else 10e9) for t in grid(60)])
    series("kubelet_volume_stats_available_bytes", v, [(t, avail0 - drain * (t - T0)) for t in grid(60)])
    series("kubelet_volume_stats_used_bytes", v, [(t, (50e9 if pvc != "cache" else 10e9) - (avail0 - drain * (t - T0))) for t in grid(60)])
series("kube_persistentvolumeclaim_access_mode", dict(access_mode="ReadWriteOnce", namespace="shop", persistentvolumeclaim="data-db-0", **KSM), [(t, 1) for t in grid(30)])
series("kube_persistentvolumeclaim_access_mode", dict(access_mode="ReadOnlyMany", namespace="shop", persistentvolumeclaim="cache", **KSM), [(t, 1) for t in grid(30)])
for typ, v in [("hard", 10), ("used", 9.5)]:
    series("kube_resourcequota", dict(namespace="shop", resource="requests.cpu", resourcequota="q", type=typ, **KSM), [(t, v) for t in grid(30)])

print("\n".join(out))
print("# EOF")
