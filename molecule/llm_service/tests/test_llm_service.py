"""llm_service after converge: the unit, its sandbox, the key handling and the API, for real."""

import json
import re
import time

import pytest

KEY = "molecule-test-key-0123456789abcdefghijklmnop"
UNIT = "llm-onprem@main.service"
BASE = "http://127.0.0.1:8000"


# The test host has no curl: requests are made with its python3 (stdlib only).
REQUEST = """
import json, ssl, sys, urllib.error, urllib.request
url, key, data, cafile = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
req = urllib.request.Request(url, data=data.encode() if data else None)
context = ssl.create_default_context(cafile=cafile) if cafile else None
if key:
    req.add_header("Authorization", "Bearer " + key)
if data:
    req.add_header("Content-Type", "application/json")
try:
    with urllib.request.urlopen(req, timeout=120, context=context) as resp:
        code, body = resp.status, resp.read()
except urllib.error.HTTPError as err:
    code, body = err.code, err.read()
except (urllib.error.URLError, OSError) as err:  # not listening (yet): status 0
    code, body = 0, str(err).encode()
print(json.dumps({"status": code, "body": body.decode("utf-8", "replace")}))
"""


def curl(host, path, key=None, data=None, base=BASE, cafile=""):
    """(status, body) of a request made inside the container."""
    host.run("mkdir -p /root/llm-service-test")
    if not host.file("/root/llm-service-test/request.py").exists:
        host.check_output("cat > /root/llm-service-test/request.py <<'PYEOF'" + REQUEST + "PYEOF")
    out = host.check_output("python3 /root/llm-service-test/request.py %s %s %s %s", base + path, key or "",
                            json.dumps(data) if data is not None else "", cafile)
    result = json.loads(out)
    return result["status"], result["body"]


def wait_healthy(host, seconds):
    """True once /health answers 200 within seconds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if curl(host, "/health")[0] == 200:
            return True
        time.sleep(3)
    return False


VERIFY_UNIT = "llm-onprem@verify.service"
VERIFY_BASE = "http://127.0.0.1:8001"


@pytest.fixture(autouse=True)
def healthy(host):
    """Every test starts with both instances serving (a restart takes about a minute here)."""
    if not wait_healthy(host, 300):
        pytest.fail("the instance is not healthy: " + host.check_output(f"journalctl -u {UNIT} -n 30 --no-pager"))
    deadline = time.monotonic() + 300
    while curl(host, "/health", base=VERIFY_BASE)[0] != 200:
        if time.monotonic() > deadline:
            pytest.fail("verify is not healthy: " + host.check_output(f"journalctl -u {VERIFY_UNIT} -n 30 --no-pager"))
        time.sleep(3)


def main_pid(host):
    return int(host.check_output(f"systemctl show -p MainPID --value {UNIT}"))


def test_unit_is_active_and_enabled(host):
    svc = host.service(UNIT)
    assert svc.is_running and svc.is_enabled


def test_runs_as_the_unprivileged_account(host):
    pid = main_pid(host)
    assert host.check_output(f"ps -o user= -p {pid}").strip() == "llm-onprem"
    status = host.file(f"/proc/{pid}/status").content_string
    assert re.search(r"^CapEff:\s+0+$", status, re.M), status
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)


def test_arguments_come_from_the_plan(host):
    env = host.file("/etc/llm-onprem/service/main.env")
    assert env.user == "root" and env.mode == 0o644
    text = env.content_string
    assert "LLM_ONPREM_MODEL_DIR=/var/lib/llm-onprem/models/tiny/r1\n" in text
    cmdline = host.file(f"/proc/{main_pid(host)}/cmdline").content_string.replace("\0", " ")
    for arg in ("--max-model-len 2048", "--max-num-seqs 4", "--kv-cache-memory-bytes 268435456", "--enforce-eager",
                "--served-model-name tiny-r1", "--host 127.0.0.1", "--port 8000", "--reasoning-parser deepseek_r1",
                "--dtype bfloat16"):
        assert arg in cmdline, cmdline
    assert "/opt/llm-onprem/envs/serve/bin/vllm serve /var/lib/llm-onprem/models/tiny/r1" in cmdline


def test_second_instance_has_its_own_profile(host):
    """verify's own keys (context, sequences, KV cache) reach its command line; the rest is the site's."""
    pid = int(host.check_output(f"systemctl show -p MainPID --value {VERIFY_UNIT}"))
    cmdline = host.file(f"/proc/{pid}/cmdline").content_string.replace("\0", " ") + " "
    for arg in ("--max-model-len 1024 ", "--max-num-seqs 2 ", "--kv-cache-memory-bytes 134217728 ", "--enforce-eager ",
                "--served-model-name tiny-r1-verify ", "--port 8001 ", "--dtype bfloat16 "):
        assert arg in cmdline, cmdline
    assert "CUDA_VISIBLE_DEVICES" not in host.file("/etc/llm-onprem/service/verify.env").content_string
    status, body = curl(host, "/v1/models", key=KEY, base=VERIFY_BASE)
    assert status == 200 and [m["id"] for m in json.loads(body)["data"]] == ["tiny-r1-verify"]


def test_api_key_only_in_a_root_only_file(host):
    secret = host.file("/etc/llm-onprem/service/main.secret.env")
    assert (secret.user, secret.group, secret.mode) == ("root", "root", 0o600)
    assert f"VLLM_API_KEY={KEY}" in secret.content_string
    assert KEY not in host.check_output("ps -eo args")
    assert KEY not in host.file("/etc/llm-onprem/service/main.env").content_string
    assert KEY not in host.file("/etc/systemd/system/llm-onprem@.service").content_string
    assert KEY not in host.check_output(f"journalctl -u {UNIT} --no-pager -o cat")


def test_listens_on_loopback_only(host):
    listeners = host.check_output("ss -Hltn 'sport = :8000'")
    assert "127.0.0.1:8000" in listeners
    assert "0.0.0.0:8000" not in listeners and "*:8000" not in listeners
    # vLLM's internal sockets too (its API server, engine core and worker
    # processes: torch.distributed's store, gloo): loopback only.
    uid = host.user("llm-onprem").uid
    sockets = [line for line in host.check_output("ss -Hltunpe").splitlines() if f" uid:{uid} " in line]
    assert sockets
    assert all(line.split()[4].startswith(("127.0.0.1:", "[::1]:")) for line in sockets), sockets


def test_sandbox_exposure_is_at_most_2(host):
    out = host.check_output(f"systemd-analyze security --no-pager {UNIT}")
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out).group(1))
    print(f"systemd-analyze security {UNIT}: {score}")
    assert score <= 2.0, out


@pytest.mark.parametrize("directive", [
    "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes",
    "CapabilityBoundingSet=\n", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK", "SystemCallFilter=@system-service",
    "IPAddressDeny=any", "LimitNOFILE=65536", "LimitMEMLOCK=infinity", "Restart=on-failure", "StartLimitBurst=5",
    "CacheDirectory=llm-onprem/%i", "User=llm-onprem",
])
def test_unit_directives(host, directive):
    assert directive in host.file("/etc/systemd/system/llm-onprem@.service").content_string


def test_v1_needs_the_key(host):
    assert curl(host, "/v1/models")[0] == 401
    assert curl(host, "/v1/models", key="wrong-key-0123456789abcdefghijklmnop")[0] == 401
    status, body = curl(host, "/v1/models", key=KEY)
    assert status == 200 and [m["id"] for m in json.loads(body)["data"]] == ["tiny-r1"]


def test_chat_completion_separates_reasoning(host):
    status, body = curl(host, "/v1/chat/completions", key=KEY, data={
        "model": "tiny-r1", "messages": [{"role": "user", "content": "Is the service up?"}], "max_tokens": 64,
        "temperature": 0})
    assert status == 200, body
    choice = json.loads(body)["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"].strip()
    assert (choice["message"].get("reasoning") or choice["message"].get("reasoning_content") or "").strip()


def test_killed_server_is_restarted_by_systemd(host):
    before = main_pid(host)
    restarts = int(host.check_output(f"systemctl show -p NRestarts --value {UNIT}"))
    host.check_output(f"kill -9 {before}")
    time.sleep(5)
    if not wait_healthy(host, 400) or main_pid(host) in (0, before):
        pytest.fail("not restarted and healthy within 400 s: " + host.check_output(f"journalctl -u {UNIT} -n 30 --no-pager"))
    assert int(host.check_output(f"systemctl show -p NRestarts --value {UNIT}")) == restarts + 1
    assert curl(host, "/v1/models", key=KEY)[0] == 200


# Through the gateway: TLS with the generated CA, the client key on every path but /healthz.
CLIENT_KEY = "molecule-client-key-0123456789abcdefghijklmn"
GATEWAY_CA = "/etc/llm-onprem/gateway/tls/ca.crt"


def gateway(host):
    return "https://{}:443".format(host.check_output("hostname -I").split()[0])


@pytest.mark.parametrize("path, data", [
    ("/v1/models", None),
    ("/v1/chat/completions", {"model": "tiny-r1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}),
    ("/v1/completions", {"model": "tiny-r1", "prompt": "hi", "max_tokens": 4}),
    ("/metrics", None),
    ("/", None),
    ("/version", None),
    ("/health", None),
    ("/anything/else", None),
])
def test_gateway_refuses_every_path_without_the_key(host, path, data):
    for key in (None, "wrong-client-key-0123456789abcdefghijklmnop", KEY):
        status, body = curl(host, path, key=key, data=data, base=gateway(host), cafile=GATEWAY_CA)
        assert status == 401, (path, key and key[:6], status, body[:200])


def test_gateway_health_probe_is_open(host):
    assert curl(host, "/healthz", base=gateway(host), cafile=GATEWAY_CA)[0] == 200


@pytest.mark.parametrize("path", ["/v1/models", "/metrics"])
def test_gateway_passes_with_the_key(host, path):
    status, body = curl(host, path, key=CLIENT_KEY, base=gateway(host), cafile=GATEWAY_CA)
    assert status == 200, body[:300]
    if path == "/metrics":
        assert "vllm:" in body


def test_gateway_chat_completion(host):
    status, body = curl(host, "/v1/chat/completions", key=CLIENT_KEY, base=gateway(host), cafile=GATEWAY_CA, data={
        "model": "tiny-r1", "messages": [{"role": "user", "content": "Is the service up?"}], "max_tokens": 64})
    assert status == 200, body
    message = json.loads(body)["choices"][0]["message"]
    assert message["content"].strip() and (message.get("reasoning") or message.get("reasoning_content"))


@pytest.mark.parametrize("model", ["tiny-r1", "tiny-r1-verify"])
def test_gateway_routes_by_model_name(host, model):
    """The request's model field picks the instance: the answer names it, and its max_model_len applies."""
    status, body = curl(host, "/v1/chat/completions", key=CLIENT_KEY, base=gateway(host), cafile=GATEWAY_CA, data={
        "model": model, "messages": [{"role": "user", "content": "Which model are you?"}], "max_tokens": 16})
    assert status == 200, body
    assert json.loads(body)["model"] == model
    # 1100 tokens fit main's 2048-token context but not verify's 1024: vLLM's own 400 proves the instance.
    status, body = curl(host, "/v1/completions", key=CLIENT_KEY, base=gateway(host), cafile=GATEWAY_CA, data={
        "model": model, "prompt": "hi", "max_tokens": 1100})
    assert status == (200 if model == "tiny-r1" else 400), body[:300]


def test_gateway_lists_every_instances_model(host):
    status, body = curl(host, "/v1/models", key=CLIENT_KEY, base=gateway(host), cafile=GATEWAY_CA)
    assert status == 200, body
    assert sorted(m["id"] for m in json.loads(body)["data"]) == ["tiny-r1", "tiny-r1-verify"]


def test_gateway_unknown_model_is_404_in_openai_format(host):
    status, body = curl(host, "/v1/chat/completions", key=CLIENT_KEY, base=gateway(host), cafile=GATEWAY_CA, data={
        "model": "no-such-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    assert status == 404, body
    error = json.loads(body)["error"]
    assert "no-such-model" in error["message"] and error["param"] == "model"
