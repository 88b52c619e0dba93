"""Every inventory mistake stops site.yml in its first play, before any host is contacted.

A valid copy of inventories/hospital is made in a temporary directory (test keys in a
vault-like file, a site certificate and key made here, the host pointed at 127.0.0.1 port 9,
where nothing listens). Each case of the table applies one realistic mistake to its own
copy and runs the real entry point, ``ansible-playbook site.yml -i <copy>``. A case passes
when the run fails in the play "Validate the inventory" with a message naming the variable,
and no host was contacted (no UNREACHABLE anywhere). The valid copy itself must pass play 1
and reach the host: it is UNREACHABLE in play 2, which proves play 1 let it through.

The runs go in parallel (one ansible-playbook per case); the whole file takes about two
minutes on a 2-core machine.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
SITE = "hospital"
HOST = "gpu-report-01"
PLAY1 = "Validate the inventory"
CLIENT_KEY = "test0client0key0aaaaaaaaaaaaaaaaaaaaaaaaaaaa"
UPSTREAM_KEY = "test0upstream0key0bbbbbbbbbbbbbbbbbbbbbbbbbb"
CERT = "{{ inventory_dir }}/files/gateway/"

DEPLOY = "all/deployment.yml"
PRE = "llm_servers/preflight.yml"
HT = "llm_servers/host_tuning.yml"
NV = "llm_servers/nvidia_driver.yml"
RT = "llm_servers/llm_runtime.yml"
MS = "llm_servers/model_store.yml"
QZ = "llm_servers/quantize.yml"
SV = "llm_servers/llm_service.yml"
GW = "llm_servers/gateway.yml"
VAULT = "llm_servers/vault.yml"
MON = "llm_monitoring/monitoring.yml"
MONITORING_KEY = "test0monitoring0key0cccccccccccccccccccccccc"

STORE_MODEL = {
    "name": "DeepSeek-R1-Distill-Qwen-32B", "source": "http", "revision": "r1-distill-qwen-32b-bf16-2025-01",
    "manifest_url": "https://models.hospital.internal/32b/r1/llm-onprem-manifest.json",
}
INSTANCE = {"name": "main", "model": "DeepSeek-R1-Distill-Qwen-32B", "served_model_name": "r1", "port": 8000}


def _instance(**changes):
    return [dict(INSTANCE, **changes)]


def _quant(**changes):
    return [dict({"name": "DeepSeek-R1-Distill-Qwen-32B-W4A16", "source": "DeepSeek-R1-Distill-Qwen-32B"}, **changes)]


# (case id, {group_vars file: {variable: value}}, the text the failure message must hold)
CASES = [
    # preflight: the deployment profile and the preflight options
    ("preflight-context-too-long", {DEPLOY: {"llm_max_model_len": 262144}}, "llm_max_model_len"),
    ("preflight-tp-not-divisor", {DEPLOY: {"llm_tensor_parallel_size": 3}}, "llm_tensor_parallel_size"),
    ("preflight-gpu-share-above-1", {DEPLOY: {"llm_gpu_memory_utilization": 1.5}}, "llm_gpu_memory_utilization"),
    ("preflight-unknown-weights", {DEPLOY: {"llm_weights": "int5"}}, "llm_weights"),
    ("preflight-batch-below-seqs", {DEPLOY: {"llm_max_num_batched_tokens": 2}}, "llm_max_num_batched_tokens"),
    ("preflight-4bit-group-size", {DEPLOY: {"llm_weights": "w4a16", "llm_weights_group_size": 100}},
     "llm_weights_group_size"),
    ("preflight-unknown-model", {DEPLOY: {"llm_model": "DeepSeek-R1-Distill-Qwen-99B"}}, "llm_model"),
    ("preflight-gpu-memory-format", {PRE: {"preflight_gpu_memory": ["80 gigs"]}}, "preflight_gpu_memory"),
    ("preflight-model-dir-relative", {DEPLOY: {"llm_model_dir_disk_path": "models"}}, "llm_model_dir_disk_path"),
    ("preflight-option-typo", {PRE: {"preflight_requre_gpu": True}}, "preflight_requre_gpu"),
    # host_tuning: kernel ranges, paths, interface names, NCCL and sysctl names
    ("host-tuning-swappiness", {HT: {"host_tuning_swappiness": 250}}, "host_tuning_swappiness"),
    ("host-tuning-hugepages-negative", {HT: {"host_tuning_hugepages_count": -1}}, "host_tuning_hugepages_count"),
    ("host-tuning-ram-share-1", {HT: {"host_tuning_hugepages_max_ram_share": 1.0}}, "host_tuning_hugepages_max_ram_share"),
    ("host-tuning-swap-file-relative", {HT: {"host_tuning_swap_file": "swapfile"}}, "host_tuning_swap_file"),
    ("host-tuning-ifname-shell", {HT: {"host_tuning_nccl_socket_ifname": "eth0; reboot"}},
     "host_tuning_nccl_socket_ifname"),
    ("host-tuning-nofile-above-nr-open", {HT: {"host_tuning_limits_nofile": 4194304}}, "host_tuning_limits_nofile"),
    ("host-tuning-memlock-word", {HT: {"host_tuning_limits_memlock": "lots"}}, "host_tuning_limits_memlock"),
    ("host-tuning-nccl-name", {HT: {"host_tuning_nccl_extra_env": {"LD_PRELOAD": "/tmp/x.so"}}},
     "host_tuning_nccl_extra_env has 'LD_PRELOAD'"),
    # nvidia_driver: branches, versions, URLs, fingerprints, files on the control node
    ("nvidia-branch-too-old-for-cuda", {NV: {"nvidia_driver_branch": "535"}}, "nvidia_driver_branch"),
    ("nvidia-branch-format", {NV: {"nvidia_driver_branch": "58O"}}, "nvidia_driver_branch"),
    ("nvidia-version-other-branch", {NV: {"nvidia_driver_version": "570.86.15"}}, "nvidia_driver_version"),
    ("nvidia-cuda-format", {NV: {"nvidia_driver_required_cuda": "13"}}, "nvidia_driver_required_cuda"),
    ("nvidia-repo-url-no-scheme", {NV: {"nvidia_driver_repo_url": "mirror.hospital.internal/nvidia/"}},
     "nvidia_driver_repo_url"),
    ("nvidia-fingerprint-short", {NV: {"nvidia_driver_repo_key_fingerprints": ["3BF863CC"]}},
     "nvidia_driver_repo_key_fingerprints"),
    ("nvidia-key-file-missing", {NV: {"nvidia_driver_repo_key_url": "", "nvidia_driver_repo_key_src": "/nonexistent/key.pub"}},
     "nvidia_driver_repo_key_src"),
    ("nvidia-debian-with-cuda", {NV: {"nvidia_driver_source": "debian"}}, "nvidia_driver_cuda_enabled"),
    # llm_runtime: URLs, versions, pins, counts, files on the control node
    ("runtime-index-no-scheme", {RT: {"llm_runtime_index_url": "pypi.hospital.internal/simple/"}}, "llm_runtime_index_url"),
    ("runtime-index-no-host", {RT: {"llm_runtime_index_url": "https:///simple/"}}, "llm_runtime_index_url"),
    ("runtime-version-operator", {RT: {"llm_runtime_vllm_version": ">=0.32"}}, "llm_runtime_vllm_version"),
    ("runtime-keep-old-negative", {RT: {"llm_runtime_keep_old": -1}}, "llm_runtime_keep_old"),
    ("runtime-wheelhouse-missing", {RT: {"llm_runtime_wheelhouse_dir": "/nonexistent/wheelhouse"}},
     "llm_runtime_wheelhouse_dir"),
    ("runtime-offline-no-wheelhouse", {RT: {"llm_runtime_offline": True}}, "llm_runtime_offline"),
    ("runtime-extra-package-unpinned", {RT: {"llm_runtime_serve_extra_packages": ["flashinfer-python"]}},
     "llm_runtime_serve_extra_packages"),
    ("runtime-conda-no-installer", {RT: {"llm_runtime_method": "conda"}}, "llm_runtime_conda_installer_url"),
    ("runtime-ca-file-missing", {RT: {"llm_runtime_ca_certificates": ["/nonexistent/site-ca.crt"]}},
     "llm_runtime_ca_certificates"),
    # model_store: the root, accounts, modes, each entry's name, revision and URL
    ("store-root-system-dir", {MS: {"model_store_root": "/var"}}, "model_store_root"),
    ("store-mode-not-octal", {MS: {"model_store_file_mode": "0999"}}, "model_store_file_mode"),
    ("store-owner-spaces", {MS: {"model_store_owner": "Deploy User"}}, "model_store_owner"),
    ("store-name-path", {MS: {"model_store_models": [dict(STORE_MODEL, name="../evil")]}}, "model_store_models"),
    ("store-name-twice", {MS: {"model_store_models": [STORE_MODEL, STORE_MODEL]}}, "model_store_models"),
    ("store-manifest-ftp", {MS: {"model_store_models": [dict(STORE_MODEL, manifest_url="ftp://models/m.json")]}},
     "manifest_url"),
    ("store-hub-branch", {MS: {"model_store_models": [
        {"name": "DeepSeek-R1-Distill-Qwen-32B", "source": "hub", "repo_id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
         "revision": "main"}]}}, "revision"),
    ("store-verify-schedule-shell", {MS: {"model_store_verify_schedule": "weekly; reboot"}}, "model_store_verify_schedule"),
    ("store-verify-metrics-dir-relative", {MS: {"model_store_verify_metrics_dir": "node-exporter"}},
     "model_store_verify_metrics_dir"),
    # quantize: entries against the store, group sizes, GPTQ's data, names
    ("quantize-source-not-in-store", {QZ: {"quantize_models": _quant(source="Missing-Model")}}, "model_store_models"),
    ("quantize-group-size", {QZ: {"quantize_models": _quant(group_size=100)}}, "group_size"),
    ("quantize-gptq-no-data", {QZ: {"quantize_models": _quant(method="gptq")}}, "calibration_path"),
    ("quantize-name-current", {QZ: {"quantize_models": _quant(name="current")}}, "quantize_models"),
    ("quantize-name-is-store-name", {QZ: {"quantize_models": _quant(name="DeepSeek-R1-Distill-Qwen-32B", source="/srv/x")}},
     "quantize_models"),
    ("quantize-python-relative", {QZ: {"quantize_python": "python3"}}, "quantize_python"),
    # llm_service: instances (unit names, ports, models), vLLM enumerations, the key, limits
    ("service-port-privileged", {SV: {"llm_service_instances": _instance(port=80)}}, "llm_service_instances"),
    ("service-name-slash", {SV: {"llm_service_instances": _instance(name="main/1")}}, "llm_service_instances"),
    ("service-ports-twice", {SV: {"llm_service_instances": _instance() + _instance(name="second")}}, "port 8000"),
    ("service-model-not-published", {SV: {"llm_service_instances": _instance(model="DeepSeek-R1-Distill-Qwen-14B")}},
     "model_store_models"),
    ("service-extra-arg-from-plan", {SV: {"llm_service_instances": _instance(extra_args=["--max-model-len=4096"])}},
     "extra_args"),
    ("service-reasoning-parser", {SV: {"llm_service_reasoning_parser": "deepseek-r1"}}, "llm_service_reasoning_parser"),
    ("service-key-short", {VAULT: {"vault_llm_service_api_key": "short0secret"}}, "llm_service_api_key"),
    ("service-probe-tokens-0", {SV: {"llm_service_probe_max_tokens": 0}}, "llm_service_probe_max_tokens"),
    ("service-listen-public", {SV: {"llm_service_listen_address": "0.0.0.0"}}, "llm_service_listen_address"),
    # llm_service: an instance's own profile and placement (several models per host)
    ("service-instance-key-typo", {SV: {"llm_service_instances": _instance(max_model_length=8192)}}, "max_model_length"),
    ("service-instance-weights", {SV: {"llm_service_instances": _instance(weights="int4")}}, "got: int4"),
    ("service-instance-gpus-twice", {SV: {"llm_service_instances": _instance(gpus=[0, 0])}}, "distinct GPU indices"),
    ("service-instance-share-over-1", {SV: {"llm_service_instances": _instance(gpu_memory_utilization=1.2)}},
     "gpu_memory_utilization 1.2"),
    ("service-gpu-oversubscribed", {SV: {"llm_service_instances": _instance(gpu_memory_utilization=0.6) + [
        dict(INSTANCE, name="screen", port=8001, gpu_memory_utilization=0.5)]}}, "add up to 1.10 (main 0.60, screen 0.50)"),
    # gateway: ports, addresses, upstreams against the instances, networks, limits, keys, the site certificate
    ("gateway-port-range", {GW: {"gateway_port": 70000}}, "gateway_port"),
    ("gateway-port-is-instance-port", {GW: {"gateway_port": 8000}}, "gateway_port"),
    ("gateway-listen-address", {GW: {"gateway_listen_address": "0.0.0.0.0"}}, "gateway_listen_address"),
    ("gateway-upstream-no-instance", {GW: {"gateway_upstreams": [{"name": "main", "port": 8001}]}}, "gateway_upstreams"),
    ("gateway-upstream-model-spaces", {GW: {"gateway_upstreams": [{"name": "main", "port": 8000, "model": "deepseek r1"}]}},
     "gateway_upstreams entry \"main\": model \"deepseek r1\""),
    ("gateway-upstream-model-not-served", {GW: {"gateway_upstreams": [{"name": "main", "port": 8000, "model": "r1"}]}},
     "is not what the instance on port 8000 serves"),
    ("gateway-upstream-model-unknown", {GW: {"gateway_upstreams": [
        {"name": "main", "port": 8000}, {"name": "spare", "host": "10.20.0.7", "port": 8000}]}},
     "gateway_upstreams entry \"spare\": the gateway cannot tell which model"),
    ("gateway-canary-percent-range", {GW: {"gateway_upstreams": [
        {"name": "main", "port": 8000}, {"name": "next", "host": "10.20.0.7", "port": 8000, "model": "r1",
                                         "canary_percent": 150}]}},
     "gateway_upstreams entry \"next\": canary_percent 150 must be a number from 0 to 100"),
    ("gateway-canary-two-candidates", {GW: {"gateway_upstreams": [
        {"name": "main", "port": 8000},
        {"name": "next", "host": "10.20.0.7", "port": 8000, "model": "r1", "canary_percent": 5},
        {"name": "other", "host": "10.20.0.8", "port": 8000, "model": "r1", "canary_percent": 5}]}},
     "at most one candidate per model"),
    ("gateway-canary-no-stable", {GW: {"gateway_upstreams": [
        {"name": "main", "port": 8000}, {"name": "next", "host": "10.20.0.7", "port": 8000, "model": "r2",
                                         "canary_percent": 5}]}},
     "no entry without canary_percent serves that model"),
    ("gateway-network-prefix", {GW: {"gateway_allowed_networks": ["10.20.0.0/33"]}}, "gateway_allowed_networks"),
    ("gateway-networks-empty", {GW: {"gateway_allowed_networks": []}}, "gateway_allowed_networks"),
    ("gateway-body-size", {GW: {"gateway_client_max_body_size": "10 MB"}}, "gateway_client_max_body_size"),
    ("gateway-health-under-v1", {GW: {"gateway_health_path": "/v1/health"}}, "gateway_health_path"),
    ("gateway-client-key-short", {VAULT: {"vault_gateway_api_keys": ["short0client"]}}, "gateway_api_keys"),
    ("gateway-client-holds-upstream-key", {VAULT: {"vault_gateway_api_keys": [CLIENT_KEY, UPSTREAM_KEY]}},
     "gateway_upstream_api_key"),
    ("gateway-ssh-port-not-play-port", {GW: {"gateway_ssh_port": 22}}, "gateway_ssh_port"),
    ("gateway-cert-missing", {GW: {"gateway_tls_cert_file": CERT + "missing.pem"}}, "gateway_tls_cert_file"),
    ("gateway-key-of-other-cert", {GW: {"gateway_tls_key_file": CERT + "other.key"}}, "is not the key of gateway_tls_cert_file"),
    ("gateway-cert-expired", {GW: {"gateway_tls_cert_file": CERT + "expired.pem", "gateway_tls_key_file": CERT + "expired.key"}},
     "expired on"),
    ("gateway-cert-other-name", {GW: {"gateway_server_names": ["llm.clinic.internal"]}}, "gateway_server_names"),
    ("gateway-key-encrypted", {GW: {"gateway_tls_cert_file": CERT + "encrypted.pem", "gateway_tls_key_file": CERT + "encrypted.key"}},
     "gateway_tls_key_file"),
    ("gateway-generated-san", {GW: {"gateway_tls_mode": "generated", "gateway_tls_generated_sans": ["llm hospital"]}},
     "gateway_tls_generated_sans"),
    # monitoring (the site's llm_monitoring group: the inference server itself)
    ("monitoring-listen-wildcard", {MON: {"monitoring_listen_address": "0.0.0.0"}}, "monitoring_listen_address"),
    ("monitoring-port-clash", {MON: {"monitoring_mtail_port": 9090}}, "must be distinct"),
    ("monitoring-pin-with-operator", {MON: {"monitoring_mtail_version": ">=3.0"}}, "monitoring_mtail_version"),
    ("monitoring-5xx-ratio", {MON: {"monitoring_alert_gateway_5xx_ratio": 1.5}}, "ratios in (0, 1]"),
    ("monitoring-key-short", {VAULT: {"vault_monitoring_api_key": "short0monitor"}}, "monitoring_api_key"),
    ("monitoring-key-is-client-key", {VAULT: {"vault_monitoring_api_key": CLIENT_KEY}}, "monitoring_api_key"),
    ("monitoring-email-smarthost", {MON: {"monitoring_email_to": ["it@hospital.example"],
                                          "monitoring_email_from": "llm@hospital.example",
                                          "monitoring_email_smarthost": "smtp.hospital.example"}},
     "monitoring_email_smarthost"),
    ("monitoring-dcgm-version-word", {MON: {"monitoring_dcgm_version": "latest"}}, "monitoring_dcgm_version"),
    ("monitoring-dcgm-counter-name", {MON: {"monitoring_dcgm_exporter_counters": [
        {"name": "gpu_utilization", "type": "gauge", "help": "GPU utilization (in %)."}]}},
     "monitoring_dcgm_exporter_counters"),
]

SECRETS = ("short0secret", "short0client", "short0monitor", CLIENT_KEY, UPSTREAM_KEY, MONITORING_KEY)


def _certificate(directory, name, hosts, days=30, expired=False, password=None, key_name=None):
    """A self-signed certificate for hosts, and its key, as the site would hand them over."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    start, end = (now - datetime.timedelta(days=60), now - datetime.timedelta(days=1)) if expired else \
        (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
            .sign(key, hashes.SHA256()))
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    (directory / f"{key_name or name}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    (directory / f"{key_name or name}.key").chmod(0o600)


def _valid_site(base):
    """A valid copy of inventories/hospital whose only host refuses connections (127.0.0.1 port 9)."""
    shutil.copytree(ROOT / "inventories" / SITE, base)
    (base / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {
        "llm_servers": {"hosts": {HOST: {
            "ansible_host": "127.0.0.1", "ansible_port": 9, "ansible_user": "deploy",
            "ansible_ssh_common_args": "-o ConnectTimeout=5"}}},
        "llm_monitoring": {"children": {"llm_servers": None}}}}}))
    # What a site keeps in its ansible-vault file (test keys here).
    (base / "group_vars" / "llm_servers" / "vault.yml").write_text(yaml.safe_dump(
        {"vault_gateway_api_keys": [CLIENT_KEY], "vault_llm_service_api_key": UPSTREAM_KEY,
         "vault_monitoring_api_key": MONITORING_KEY}))
    # The firewall keeps the play's SSH port open: here the play's port is 9.
    _edit(base, {GW: {"gateway_ssh_port": 9}})
    tls = base / "files" / "gateway"
    tls.mkdir(parents=True)
    _certificate(tls, "llm.hospital.internal.fullchain", ["llm.hospital.internal"], key_name="llm.hospital.internal")
    _certificate(tls, "unused", ["llm.hospital.internal"], key_name="other")
    _certificate(tls, "expired", ["llm.hospital.internal"], expired=True)
    _certificate(tls, "encrypted", ["llm.hospital.internal"], password=b"site-passphrase")


def _edit(base, changes):
    for rel, values in changes.items():
        path = base / "group_vars" / rel
        data = yaml.safe_load(path.read_text()) if path.exists() else {}
        data.update(values)
        path.write_text("---\n" + yaml.safe_dump(data, sort_keys=False))


def _run(inventory):
    """ansible-playbook site.yml -i inventory: (rc, [(play, task, result)] of every host result, raw output)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
               ANSIBLE_CALLBACKS_ENABLED="ansible.builtin.json", ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0")
    proc = subprocess.run([ANSIBLE_PLAYBOOK, "site.yml", "-i", str(inventory)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    start = proc.stdout.find("{")
    report = json.loads(proc.stdout[start:]) if start >= 0 else {"plays": []}
    results = []
    for play in report.get("plays", []):
        for task in play.get("tasks", []):
            for host, result in task.get("hosts", {}).items():
                results.append((play["play"]["name"], task["task"]["name"], host, result))
    return proc.returncode, results, proc.stdout + proc.stderr


def _messages(result):
    parts = [str(result.get("msg", ""))] + [str(r.get("msg", "")) for r in result.get("results", []) if r.get("failed")]
    return " ".join(parts)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run the valid site and every case once, in parallel; case id -> (rc, results, output)."""
    root = tmp_path_factory.mktemp("inventory-mistakes")
    _valid_site(root / "valid")
    jobs = {"valid": root / "valid"}
    # The two-precision example (inventories/hospital-h200): its instances, routes,
    # INT4 copy and GPU size on the valid site.
    shutil.copytree(root / "valid", root / "valid-two-precision")
    example = ROOT / "inventories" / "hospital-h200" / "group_vars"
    _edit(root / "valid-two-precision", {
        rel: {key: value for key, value in yaml.safe_load((example / rel).read_text()).items() if key in keys}
        for rel, keys in ((SV, ["llm_service_instances"]), (GW, ["gateway_upstreams"]), (QZ, ["quantize_models"]),
                          (PRE, ["preflight_gpu_memory"]), (DEPLOY, ["llm_gpu_memory_utilization"]))})
    jobs["valid-two-precision"] = root / "valid-two-precision"
    for case_id, changes, _expect in CASES:
        shutil.copytree(root / "valid", root / case_id)
        _edit(root / case_id, changes)
        jobs[case_id] = root / case_id
    workers = max(2, min(4, os.cpu_count() or 2))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = dict(zip(jobs, pool.map(_run, jobs.values()), strict=True))
    return done


@pytest.mark.parametrize("site", ["valid", "valid-two-precision"])
def test_valid_site_passes_play_1_and_reaches_the_host(runs, site):
    rc, results, output = runs[site]
    failed = [(p, t, _messages(r)) for p, t, _h, r in results if r.get("failed")]
    unreachable = [(p, t) for p, t, _h, r in results if r.get("unreachable")]
    assert not failed, output[-3000:]
    assert unreachable, output[-3000:]
    assert unreachable[0][0] == "Preflight", unreachable
    assert any(p == PLAY1 for p, *_ in results)
    assert rc != 0


@pytest.mark.parametrize(("case_id", "changes", "expect"), CASES, ids=[c[0] for c in CASES])
def test_mistake_stops_play_1(runs, case_id, changes, expect):
    rc, results, output = runs[case_id]
    assert rc != 0, f"{case_id}: site.yml did not fail: {output[-2000:]}"
    assert not [r for *_x, r in results if r.get("unreachable")], f"{case_id}: a host was contacted: {output[-2000:]}"
    failed = [(play, task, _messages(r)) for play, task, _h, r in results if r.get("failed")]
    assert failed, f"{case_id}: no task failed: {output[-2000:]}"
    play, task, message = failed[0]
    assert play == PLAY1, f"{case_id}: failed in play {play!r}, task {task!r}: {message}"
    assert expect in message, f"{case_id}: {task!r} says: {message}"
    for secret in SECRETS:
        assert secret not in output, f"{case_id}: a key was printed"


def test_the_table_covers_every_role():
    prefixes = {"preflight": 9, "host-tuning": 7, "nvidia": 7, "runtime": 8, "store": 6, "quantize": 5,
                "service": 8, "gateway": 12, "monitoring": 6}
    counts = {p: sum(1 for c in CASES if c[0].startswith(p + "-")) for p in prefixes}
    assert all(counts[p] >= n for p, n in prefixes.items()), counts
    assert len(CASES) >= 60
