#!/usr/bin/env python3
"""Generate the Grafana dashboards of roles/monitoring from one Python source.

Four dashboards (GPU, vLLM serving, gateway, host) are built with Grafana's
Foundation SDK (grafana-foundation-sdk, pinned in requirements.txt) and written
to roles/monitoring/files/dashboards/<name>.json, which the role provisions
(tasks/dashboards.yml). Every panel queries the Prometheus data source chosen by
the dashboard's `datasource` variable: no data source uid is hard-coded.

Metric names are those the pinned releases export: vLLM 0.32.0
(vllm/v1/metrics/loggers.py; prometheus_client adds `_total` to counters),
dcgm-exporter's field names (etc/default-counters.csv, plus FB_RESERVED and the
volatile ECC counters that the role's counters file enables), node exporter 1.5,
the gateway's mtail program (llm_onprem_gateway_*), the blackbox probe job
`gateway_probe` and the model store's textfile metric
(llm_onprem_model_files_mismatched). tests/unit/test_dashboards.py checks each
name against an allow-list and each expression with promtool.

Usage:
    tools/dashboards.py            write the JSON files
    tools/dashboards.py --check    exit 1 when the committed files differ (lint stage)
    tools/dashboards.py --queries  print every panel's PromQL as JSON, per dashboard
"""
import argparse
import json
import pathlib
import re
import sys

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh, VariableSort

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "roles" / "monitoring" / "files" / "dashboards"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS = ["llm-onprem"]
# What a Grafana variable stands for when an expression runs in Prometheus
# directly (--queries, the promtool test): every value of the label.
PROMQL_SUBSTITUTIONS = {"$__rate_interval": "5m", "$llm_instance": ".*", "$instance": ".*"}
# Which exporter or job produces a metric (by name prefix), for --queries: a test
# against a host without GPUs, gateway or textfile metrics knows what to expect.
SOURCES = (("vllm:", "vllm"), ("DCGM_", "dcgm-exporter"), ("node_", "node-exporter"),
           ("llm_onprem_gateway_", "mtail"), ("probe_", "blackbox-exporter"), ("llm_onprem_model_", "textfile"),
           ("up", "prometheus"))

FRAGMENTATION = (
    "vLLM's paged KV cache is a pool of fixed-size blocks that vLLM allocates once at start-up "
    "(llm_gpu_memory_utilization of each GPU): a request takes whole blocks from the pool and gives "
    "them back, so external fragmentation inside the KV pool does not arise in the classic sense. "
    "Memory pressure shows as KV cache usage near 100 % and as preemptions (requests evicted and "
    "recomputed), not as fragmentation. ")


def query(expr, legend="__auto"):
    return {"expr": expr, "legend": legend}


def panel(title, description, targets, unit="short", kind="timeseries", width=12, height=8, max_value=None):
    return {"title": title, "description": description, "targets": targets, "unit": unit, "kind": kind,
            "width": width, "height": height, "max": max_value}


def _vllm():
    sel = 'llm_instance=~"$llm_instance"'
    rate = "$__rate_interval"

    def quantiles(metric):
        return [query(f"histogram_quantile({q}, sum by (llm_instance, le) (rate({metric}_bucket{{{sel}}}[{rate}])))",
                      f"{{{{llm_instance}}}} p{int(q * 100)}") for q in (0.5, 0.99)]

    return {
        "uid": "llm-onprem-vllm",
        "file": "vllm",
        "title": "LLM on-prem / vLLM serving",
        "description": "vLLM 0.32.0 instances (job vllm, one target per llm_service_instances entry, label llm_instance).",
        "variables": [("llm_instance", "label_values(vllm:num_requests_running, llm_instance)")],
        "rows": [
            ("Load", [
                panel("Instances up", "1 when Prometheus scrapes the instance's /metrics (alert LLMInstanceDown).",
                      [query(f'up{{job="vllm", {sel}}}', "{{llm_instance}}")], kind="stat", width=6, height=6),
                panel("Requests running and waiting",
                      "vllm:num_requests_running (in the running batch) and vllm:num_requests_waiting (queued).",
                      [query(f"sum by (llm_instance) (vllm:num_requests_running{{{sel}}})", "{{llm_instance}} running"),
                       query(f"sum by (llm_instance) (vllm:num_requests_waiting{{{sel}}})", "{{llm_instance}} waiting")],
                      width=18, height=6),
                panel("Finished requests per second",
                      "Rate of vllm:request_success_total by finished_reason (stop, length, abort, error, repetition).",
                      [query(f"sum by (llm_instance, finished_reason) (rate(vllm:request_success_total{{{sel}}}[{rate}]))",
                             "{{llm_instance}} {{finished_reason}}")], unit="reqps"),
                panel("Tokens per second", "Prompt (prefill) and generated tokens per second.",
                      [query(f"sum by (llm_instance) (rate(vllm:prompt_tokens_total{{{sel}}}[{rate}]))",
                             "{{llm_instance}} prompt"),
                       query(f"sum by (llm_instance) (rate(vllm:generation_tokens_total{{{sel}}}[{rate}]))",
                             "{{llm_instance}} generated")]),
            ]),
            ("Latency", [
                panel("Time to first token", "P50 and P99 of vllm:time_to_first_token_seconds (alert "
                      "LLMTimeToFirstTokenP99High).", quantiles("vllm:time_to_first_token_seconds"), unit="s"),
                panel("End-to-end request latency", "P50 and P99 of vllm:e2e_request_latency_seconds (alert "
                      "LLMLatencyP99High).", quantiles("vllm:e2e_request_latency_seconds"), unit="s"),
                panel("Inter-token latency", "P50 and P99 of vllm:inter_token_latency_seconds.",
                      quantiles("vllm:inter_token_latency_seconds"), unit="s"),
                panel("Queue time", "P50 and P99 of vllm:request_queue_time_seconds (time spent waiting).",
                      quantiles("vllm:request_queue_time_seconds"), unit="s"),
            ]),
            ("KV cache", [
                panel("KV cache usage", FRAGMENTATION + "vllm:kv_cache_usage_perc is the used share of the blocks "
                      "(1 = full; alert LLMKVCacheFull).",
                      [query(f"max by (llm_instance, engine) (vllm:kv_cache_usage_perc{{{sel}}})",
                             "{{llm_instance}} engine {{engine}}")], unit="percentunit", max_value=1),
                panel("Preemptions per minute", FRAGMENTATION + "A preemption evicts a running request's blocks "
                      "when the pool is full (alert LLMPreemptions).",
                      [query(f"sum by (llm_instance) (rate(vllm:num_preemptions_total{{{sel}}}[{rate}])) * 60",
                             "{{llm_instance}}")]),
                panel("Prefix cache hit ratio", "Share of queried prompt tokens found in the prefix cache "
                      "(vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total); empty while idle.",
                      [query(f"sum by (llm_instance) (rate(vllm:prefix_cache_hits_total{{{sel}}}[{rate}])) / "
                             f"sum by (llm_instance) (rate(vllm:prefix_cache_queries_total{{{sel}}}[{rate}]))",
                             "{{llm_instance}}")], unit="percentunit", max_value=1),
            ]),
        ],
    }


def _gpu():
    sel = 'instance=~"$instance"'
    mib = " * 1048576"
    return {
        "uid": "llm-onprem-gpu",
        "file": "gpu",
        "title": "LLM on-prem / GPUs",
        "description": "NVIDIA dcgm-exporter (job gpu) with the role's counters file; one series per GPU (label gpu).",
        "variables": [("instance", "label_values(DCGM_FI_DEV_GPU_UTIL, instance)")],
        "rows": [
            ("Utilisation", [
                panel("GPU utilisation", "DCGM_FI_DEV_GPU_UTIL (alert LLMQueuedWhileGPUIdle).",
                      [query(f"DCGM_FI_DEV_GPU_UTIL{{{sel}}}", "{{instance}} GPU {{gpu}}")], unit="percent",
                      max_value=100),
                panel("Memory copy utilisation", "DCGM_FI_DEV_MEM_COPY_UTIL: share of time the memory was read "
                      "or written.", [query(f"DCGM_FI_DEV_MEM_COPY_UTIL{{{sel}}}", "{{instance}} GPU {{gpu}}")],
                      unit="percent", max_value=100),
            ]),
            ("Memory", [
                panel("Frame buffer used, free and reserved", FRAGMENTATION + "Used and free come from "
                      "DCGM_FI_DEV_FB_USED/FB_FREE; vLLM holds its pool from start-up, so used stays flat under "
                      "load. DCGM_FI_DEV_FB_RESERVED (memory the driver keeps) is not in dcgm-exporter's stock "
                      "counters; the role's counters file (monitoring_dcgm_exporter_counters) enables it.",
                      [query(f"DCGM_FI_DEV_FB_USED{{{sel}}}{mib}", "{{instance}} GPU {{gpu}} used"),
                       query(f"DCGM_FI_DEV_FB_FREE{{{sel}}}{mib}", "{{instance}} GPU {{gpu}} free"),
                       query(f"DCGM_FI_DEV_FB_RESERVED{{{sel}}}{mib}", "{{instance}} GPU {{gpu}} reserved")],
                      unit="bytes"),
                panel("Frame buffer used share", "FB_USED / (FB_USED + FB_FREE), as alert GPUMemoryHigh computes it.",
                      [query(f"DCGM_FI_DEV_FB_USED{{{sel}}} / (DCGM_FI_DEV_FB_USED{{{sel}}} + "
                             f"DCGM_FI_DEV_FB_FREE{{{sel}}})", "{{instance}} GPU {{gpu}}")],
                      unit="percentunit", max_value=1),
            ]),
            ("Health", [
                panel("Temperature", "DCGM_FI_DEV_GPU_TEMP and DCGM_FI_DEV_MEMORY_TEMP.",
                      [query(f"DCGM_FI_DEV_GPU_TEMP{{{sel}}}", "{{instance}} GPU {{gpu}}"),
                       query(f"DCGM_FI_DEV_MEMORY_TEMP{{{sel}}}", "{{instance}} GPU {{gpu}} memory")],
                      unit="celsius", width=8),
                panel("Power", "DCGM_FI_DEV_POWER_USAGE.",
                      [query(f"DCGM_FI_DEV_POWER_USAGE{{{sel}}}", "{{instance}} GPU {{gpu}}")], unit="watt", width=8),
                panel("Last XID error", "DCGM_FI_DEV_XID_ERRORS is the number of the last XID error the driver "
                      "reported (0: none); look it up in NVIDIA's XID table.",
                      [query(f"DCGM_FI_DEV_XID_ERRORS{{{sel}}}", "{{instance}} GPU {{gpu}}")], kind="stat",
                      width=8),
                panel("Remapped memory rows", "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS and "
                      "UNCORRECTABLE_REMAPPED_ROWS (default counters) and DCGM_FI_DEV_ROW_REMAP_FAILURE (1: "
                      "remapping failed, replace the GPU).",
                      [query(f"DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS{{{sel}}}", "{{instance}} GPU {{gpu}} correctable"),
                       query(f"DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS{{{sel}}}",
                             "{{instance}} GPU {{gpu}} uncorrectable"),
                       query(f"DCGM_FI_DEV_ROW_REMAP_FAILURE{{{sel}}}", "{{instance}} GPU {{gpu}} remap failed")]),
                panel("ECC errors (volatile)", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL / ECC_DBE_VOL_TOTAL since the driver "
                      "loaded (commented out in dcgm-exporter's stock counters; the role's counters file, "
                      "monitoring_dcgm_exporter_counters, enables them). Double-bit errors: drain and check the GPU.",
                      [query(f"DCGM_FI_DEV_ECC_SBE_VOL_TOTAL{{{sel}}}", "{{instance}} GPU {{gpu}} single-bit"),
                       query(f"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{sel}}}", "{{instance}} GPU {{gpu}} double-bit")]),
            ]),
        ],
    }


def _gateway():
    rate = "$__rate_interval"
    requests = "llm_onprem_gateway_requests_total"
    seconds = "llm_onprem_gateway_request_seconds"
    probe = 'job="gateway_probe"'
    return {
        "uid": "llm-onprem-gateway",
        "file": "gateway",
        "title": "LLM on-prem / gateway",
        "description": "The nginx gateway: mtail on its JSON access log (llm_onprem_gateway_*) and the blackbox "
                       "probe job gateway_probe.",
        "variables": [],
        "rows": [
            ("Probe", [
                panel("Probe success", "probe_success of the blackbox probe (1: the gateway answered as expected).",
                      [query(f"probe_success{{{probe}}}", "{{instance}}")], kind="stat", width=8, height=6),
                panel("Probe duration", "probe_duration_seconds of the blackbox probe.",
                      [query(f"probe_duration_seconds{{{probe}}}", "{{instance}}")], unit="s", width=8, height=6),
                panel("TLS certificate expires in", "Days until the earliest certificate of the chain expires "
                      "(probe_ssl_earliest_cert_expiry).",
                      [query(f"(probe_ssl_earliest_cert_expiry{{{probe}}} - time()) / 86400", "{{instance}}")],
                      kind="stat", unit="d", width=8, height=6),
            ]),
            ("Traffic", [
                panel("Requests per second by status", f"Rate of {requests} by HTTP status.",
                      [query(f"sum by (status) (rate({requests}[{rate}]))", "{{status}}")], unit="reqps"),
                panel("Error shares", "Share of requests answered 5xx, and of requests refused 401/403 "
                      "(wrong or missing API key).",
                      [query(f'(sum(rate({requests}{{status=~"5.."}}[{rate}])) or vector(0)) / sum(rate({requests}[{rate}]))', "5xx"),
                       query(f'(sum(rate({requests}{{status=~"401|403"}}[{rate}])) or vector(0)) / sum(rate({requests}[{rate}]))',
                             "401/403")], unit="percentunit"),
                panel("Request duration", f"P50 and P99 of {seconds} (the histogram) and the mean (_sum/_count).",
                      [query(f"histogram_quantile(0.5, sum by (le) (rate({seconds}_bucket[{rate}])))", "p50"),
                       query(f"histogram_quantile(0.99, sum by (le) (rate({seconds}_bucket[{rate}])))", "p99"),
                       query(f"sum(rate({seconds}_sum[{rate}])) / sum(rate({seconds}_count[{rate}]))", "mean")],
                      unit="s", width=24),
            ]),
        ],
    }


def _host():
    sel = 'instance=~"$instance"'
    rate = "$__rate_interval"
    real_fs = 'fstype!~"tmpfs|ramfs|overlay|squashfs|nsfs"'
    return {
        "uid": "llm-onprem-host",
        "file": "host",
        "title": "LLM on-prem / host",
        "description": "The node exporter (job node) and the model store's integrity check (textfile collector).",
        "variables": [("instance", "label_values(node_uname_info, instance)")],
        "rows": [
            ("CPU and memory", [
                panel("CPU busy", "Share of CPU time not idle (node_cpu_seconds_total).",
                      [query(f'1 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle", {sel}}}[{rate}]))',
                             "{{instance}}")], unit="percentunit", max_value=1),
                panel("Load", "node_load1 and node_load15.",
                      [query(f"node_load1{{{sel}}}", "{{instance}} 1m"),
                       query(f"node_load15{{{sel}}}", "{{instance}} 15m")]),
                panel("Memory", "Used (MemTotal - MemAvailable) and available memory.",
                      [query(f"node_memory_MemTotal_bytes{{{sel}}} - node_memory_MemAvailable_bytes{{{sel}}}",
                             "{{instance}} used"),
                       query(f"node_memory_MemAvailable_bytes{{{sel}}}", "{{instance}} available")], unit="bytes"),
                panel("Swap used", "SwapTotal - SwapFree (alert HostSwapInUse).",
                      [query(f"node_memory_SwapTotal_bytes{{{sel}}} - node_memory_SwapFree_bytes{{{sel}}}",
                             "{{instance}}")], unit="bytes"),
            ]),
            ("Disks and network", [
                panel("Filesystem free share", "node_filesystem_avail_bytes / node_filesystem_size_bytes per mount "
                      "point (alert ModelStoreDiskFilling on the model store's).",
                      [query(f"node_filesystem_avail_bytes{{{real_fs}, {sel}}} / "
                             f"node_filesystem_size_bytes{{{real_fs}, {sel}}}", "{{instance}} {{mountpoint}}")],
                      unit="percentunit", max_value=1),
                panel("Disk throughput", "Bytes read and written per second per disk.",
                      [query(f"rate(node_disk_read_bytes_total{{{sel}}}[{rate}])", "{{instance}} {{device}} read"),
                       query(f"rate(node_disk_written_bytes_total{{{sel}}}[{rate}])",
                             "{{instance}} {{device}} written")], unit="Bps"),
                panel("Network throughput", "Bytes received and sent per second per interface (loopback left out).",
                      [query(f'rate(node_network_receive_bytes_total{{device!="lo", {sel}}}[{rate}])',
                             "{{instance}} {{device}} in"),
                       query(f'rate(node_network_transmit_bytes_total{{device!="lo", {sel}}}[{rate}])',
                             "{{instance}} {{device}} out")], unit="Bps", width=24),
            ]),
            ("Model store", [
                panel("Model files that differ from their manifest", "llm_onprem_model_files_mismatched (textfile "
                      "collector): files of a model revision whose hash no longer matches; anything above 0 means "
                      "a corrupted or altered model store.",
                      [query(f"llm_onprem_model_files_mismatched{{{sel}}}", "{{model}} {{revision}}")], kind="stat"),
                panel("Textfile collector errors", "node_textfile_scrape_error: 1 when a .prom file of the textfile "
                      "collector could not be read (the integrity metric above is then stale).",
                      [query(f"node_textfile_scrape_error{{{sel}}}", "{{instance}}")], kind="stat"),
            ]),
        ],
    }


SPECS = (_gpu, _vllm, _gateway, _host)


def _variable(name, label_query):
    return (dashboard.QueryVariable(name).label(name).datasource(DATASOURCE).query(label_query)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".*"))


def _panel(spec, panel_id):
    kinds = {"timeseries": timeseries.Panel, "stat": stat.Panel}
    built = (kinds[spec["kind"]]().id(panel_id).title(spec["title"]).description(spec["description"])
             .datasource(DATASOURCE).unit(spec["unit"]).span(spec["width"]).height(spec["height"]))
    if spec["kind"] == "timeseries":
        built = (built.legend(common.VizLegendOptions().display_mode(common_models.LegendDisplayMode.LIST)
                              .placement(common_models.LegendPlacement.BOTTOM).show_legend(True))
                 .tooltip(common.VizTooltipOptions().mode(common_models.TooltipDisplayMode.MULTI)
                          .sort(common_models.SortOrder.DESCENDING)))
    else:
        built = (built.graph_mode(common_models.BigValueGraphMode.AREA)
                 .color_mode(common_models.BigValueColorMode.VALUE)
                 .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))
    if spec["max"] is not None:
        built = built.min(0).max(spec["max"])
    for index, target in enumerate(spec["targets"]):
        built = built.with_target(prometheus.Dataquery().datasource(DATASOURCE).expr(target["expr"])
                                  .legend_format(target["legend"]).ref_id(chr(ord("A") + index)))
    return built


def build(spec):
    """One dashboard spec -> the dashboard's JSON model (a dict)."""
    board = (dashboard.Dashboard(spec["title"]).uid(spec["uid"]).description(spec["description"]).tags(TAGS)
             .editable().time("now-6h", "now").refresh("1m").timezone("browser")
             .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")))
    for name, label_query in spec["variables"]:
        board = board.with_variable(_variable(name, label_query))
    panel_id = 0
    for row_title, panels in spec["rows"]:
        panel_id += 1
        board = board.with_row(dashboard.Row(row_title).id(panel_id))
        for item in panels:
            panel_id += 1
            board = board.with_panel(_panel(item, panel_id))
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


def dashboards():
    """{file name: dashboard JSON model} for the four dashboards."""
    return {spec()["file"]: build(spec()) for spec in SPECS}


def render(model):
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def to_promql(expr):
    """A panel expression with its Grafana variables replaced, ready for Prometheus."""
    for variable, value in PROMQL_SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    if "$" in expr:
        raise ValueError(f"unsubstituted Grafana variable in {expr!r}")
    return expr


def metric_names(promql):
    """Metric names in a PromQL expression (label matchers, strings, grouping and functions removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', promql)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    keywords = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan"}
    names = set()
    for match in re.finditer(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", text):
        if match.group(2) is None and match.group(1).lower() not in keywords:
            names.add(match.group(1))
    return names


def queries():
    """{dashboard uid: [{panel, refId, expr (as Grafana sends it), promql, metrics, sources}]}."""
    result = {}
    for model in dashboards().values():
        rows = []
        for item in model["panels"]:
            for target in item.get("targets", []):
                promql = to_promql(target["expr"])
                names = sorted(metric_names(promql))
                sources = sorted({source for name in names for prefix, source in SOURCES if name.startswith(prefix)})
                rows.append({"panel": item["title"], "refId": target["refId"], "expr": target["expr"],
                             "promql": promql, "metrics": names, "sources": sources})
        result[model["uid"]] = rows
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 when the committed JSON differs")
    mode.add_argument("--queries", action="store_true", help="print every panel's PromQL as JSON")
    args = parser.parse_args(argv)
    if args.queries:
        print(json.dumps(queries(), indent=2))
        return 0
    stale = []
    for name, model in dashboards().items():
        path = OUT_DIR / f"{name}.json"
        text = render(model)
        if path.exists() and path.read_text() == text:
            continue
        if args.check:
            stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("stale dashboards (run tools/dashboards.py and commit the result): " + ", ".join(stale),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
