"""Verify the gateway from the control machine, through the container's address.

Every request goes over the network from this machine (10.88.0.1) to nginx in the
container, with TLS verified against the CA the role fetched (its certificate names
the container's address). Values asserted: molecule.yml's inventory (test keys, three
stub backends: stub-a on 127.0.0.1:8000 serving stub-model-a, stub-b on :8001
serving stub-model-b and stub-a-next on :8002, a canary candidate for stub-model-a
at 5 %; a 64k body limit) and the role's defaults (/healthz, port 443). The stubs
echo which of them answered, so the routing by model name and the canary split are
seen from here. The canary's side of a key is computed with module_utils/gateway.py
(canary_bucket, the router's hash written in Python; tests/unit/test_gateway_njs.py
proves they agree).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import ssl
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "module_utils"))
import gateway as gw  # noqa: E402

CA = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "gateway-ca.crt")
ACCESS_LOG = "/var/log/nginx/llm-onprem-gateway.access.log"
PROTECTED = ["/v1/models", "/v1/chat/completions", "/metrics", "/", "/anything"]
# Paths the stubs answer with an echo of the request (not routed by model: any instance).
ECHOED = ["/v1/chat/completions", "/metrics", "/", "/anything"]
BACKENDS = {"stub-model-a": ("stub-a", "127.0.0.1:8000"), "stub-model-b": ("stub-b", "127.0.0.1:8001")}
CANDIDATE = ("stub-a-next", "127.0.0.1:8002")  # canary for stub-model-a
CANARY_PERCENT = 5


def backend_for(model, key, percent=CANARY_PERCENT):
    """Where the gateway must send a request for ``model`` from the client with ``key``."""
    if model == "stub-model-a" and gw.canary_bucket(key) < gw.canary_threshold(percent):
        return CANDIDATE
    return BACKENDS[model]


@pytest.fixture(scope="module")
def inv():
    """The scenario's inventory values (the verifier connects with podman, not Ansible)."""
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "molecule.yml").read_text())
    values = dict(config["provisioner"]["inventory"]["group_vars"]["all"])
    # gateway_api_keys is a template there: the two named keys, then the canary's synthetic clients.
    values["gateway_api_keys"] = values["molecule_gateway_client_keys"]
    values["canary_keys"] = [f"molecule0canary0client0key00000{i}" for i in range(1000)]
    return values


@pytest.fixture(scope="module")
def address(host):
    return host.check_output("ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -n1").strip()


@pytest.fixture(scope="module")
def tls():
    ctx = ssl.create_default_context(cafile=CA)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def request(address, tls, path, method="GET", headers=None, body=None):
    conn = http.client.HTTPSConnection(address, 443, context=tls, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("path", PROTECTED)
def test_no_key_is_401_with_json_and_challenge(address, tls, path):
    status, headers, body = request(address, tls, path)
    assert status == 401
    assert headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert json.loads(body)["error"]["code"] == 401
    assert headers.get("Server") == "nginx"  # server_tokens off: no version


@pytest.mark.parametrize("path", ["/v1/models", "/metrics"])
def test_wrong_keys_are_401(address, tls, inv, path):
    key = inv["gateway_api_keys"][0]
    for headers in ({"Authorization": "Bearer " + key[:-1]}, {"Authorization": "Bearer " + key + "x"},
                    {"Authorization": "Bearer " + key.upper()}, {"Authorization": key},
                    {"Authorization": "Bearer " + inv["gateway_upstream_api_key"]}, {"X-Api-Key": key[1:]}):
        assert request(address, tls, path, headers=headers)[0] == 401, headers


@pytest.mark.parametrize("path", ECHOED)
def test_each_client_key_is_200_and_upstream_sees_only_its_own_key(address, tls, inv, path):
    for key in inv["gateway_api_keys"]:
        for headers in ({"Authorization": "Bearer " + key}, {"X-Api-Key": key}):
            status, _, body = request(address, tls, path, headers=headers)
            assert status == 200, (headers.keys(), body)
            seen = json.loads(body)
            assert seen["path"] == path
            assert seen["upstream_key_ok"] is True
            assert seen["authorization"] == "Bearer " + inv["gateway_upstream_api_key"]
            assert key not in json.dumps(seen)
            assert seen["x_api_key_present"] is False


def post(address, tls, key, path, body, headers=None):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return request(address, tls, path, "POST", dict({"Authorization": "Bearer " + key,
                                                     "Content-Type": "application/json"}, **(headers or {})), data)


def vllm_error(body):
    """The error body in vLLM's shape: {"error": {"message", "type", "param", "code"}}."""
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return error


def test_post_body_reaches_the_backend(address, tls, inv):
    body = json.dumps({"model": "stub-model-a", "messages": [{"role": "user", "content": "x" * 1000}]})
    status, _, out = post(address, tls, inv["gateway_api_keys"][1], "/v1/chat/completions", body)
    assert status == 200 and json.loads(out)["body_bytes"] == len(body)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/tokenize"])
@pytest.mark.parametrize("model", sorted(BACKENDS))
def test_each_model_goes_to_its_backend(address, tls, inv, path, model):
    for key in inv["gateway_api_keys"]:
        for _ in range(3):  # not by chance: every time
            status, _, out = post(address, tls, key, path, {"model": model, "prompt": "hi"})
            assert status == 200, out
            seen = json.loads(out)
            assert (seen["backend"], seen["model"], seen["path"]) == (backend_for(model, key)[0], model, path)
            assert seen["upstream_key_ok"] is True and seen["x_api_key_present"] is False
            assert key not in out.decode()


def test_models_lists_every_backends_models_once(address, tls, inv):
    status, headers, body = request(address, tls, "/v1/models",
                                    headers={"Authorization": "Bearer " + inv["gateway_api_keys"][0]})
    assert status == 200 and headers["Content-Type"] == "application/json"
    listing = json.loads(body)
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == ["stub-model-a", "stub-model-b"]
    assert listing["data"][0] == {"id": "stub-model-a", "object": "model", "owned_by": "stub", "root": "stub-model-a"}


def test_unknown_model_is_404_as_vllm_answers_it(address, tls, inv):
    status, headers, body = post(address, tls, inv["gateway_api_keys"][0], "/v1/chat/completions",
                                 {"model": "gpt-4o", "messages": []})
    assert status == 404 and headers["Content-Type"] == "application/json"
    # vLLM's OpenAIServing._check_model (vllm/entrypoints/openai/engine/serving.py).
    assert json.loads(body) == {"error": {"message": "The model `gpt-4o` does not exist.", "type": "NotFoundError",
                                          "param": "model", "code": 404}}


def test_missing_model_with_two_models_is_400(address, tls, inv):
    status, _, body = post(address, tls, inv["gateway_api_keys"][0], "/v1/completions", {"prompt": "hi"})
    error = vllm_error(body)
    assert status == 400 and (error["type"], error["param"], error["code"]) == ("BadRequestError", "model", 400)
    assert "stub-model-a, stub-model-b" in error["message"]


@pytest.mark.parametrize("body", [b'{"model": "stub-model-a", "prompt": ', b"model=stub-model-a", b""])
def test_a_body_that_is_not_json_is_400(address, tls, inv, body):
    status, _, out = post(address, tls, inv["gateway_api_keys"][0], "/v1/completions", body)
    error = vllm_error(out)
    assert status == 400 and (error["type"], error["param"], error["code"]) == ("BadRequestError", None, 400)
    assert error["message"].startswith("The request body is not valid JSON")


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", b"{not json"),
    ("/v1/chat/completions", b'{"model": "gpt-4o"}'),
    ("/v1/completions", b'{"prompt": "no model"}'),
    ("/v1/embeddings", b'{"model": "stub-model-a", "input": "x"}'),
])
def test_no_key_is_401_before_any_routing(address, tls, inv, path, body):
    for headers in ({}, {"Authorization": "Bearer " + inv["gateway_api_keys"][0][:-1]},
                    {"Authorization": "Bearer " + inv["gateway_upstream_api_key"]}):
        status, hdrs, out = request(address, tls, path, "POST", dict(headers, **{"Content-Type": "application/json"}),
                                    body)
        assert status == 401 and hdrs.get("WWW-Authenticate", "").startswith("Bearer"), (path, body, out)
        assert json.loads(out)["error"]["type"] == "authentication_error"


def test_the_routers_internal_location_is_not_reachable(address, tls, inv):
    for headers in ({}, {"Authorization": "Bearer " + inv["gateway_api_keys"][0]}):
        status, _, _ = request(address, tls, "/_llm_onprem/models/llm_onprem_pool_0", headers=headers)
        assert status in (401, 404)


def test_streamed_completion_passes_unbuffered(address, tls, inv):
    """The stub sends a server-sent event, then one every 0.7 s: each must arrive as it is sent."""
    conn = http.client.HTTPSConnection(address, 443, context=tls, timeout=10)
    try:
        start = time.monotonic()
        conn.request("POST", "/v1/chat/completions", body=json.dumps({"model": "stub-model-b", "stream": True}),
                     headers={"Authorization": "Bearer " + inv["gateway_api_keys"][0],
                              "Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
        arrivals = []
        while True:
            line = resp.readline()
            if not line:
                break
            if line.startswith(b"data: "):
                arrivals.append((time.monotonic() - start, line[6:].strip()))
    finally:
        conn.close()
    assert [data for _, data in arrivals][-1] == b"[DONE]"
    events = [json.loads(data) for _, data in arrivals[:-1]]
    assert [e["backend"] for e in events] == ["stub-b"] * 3
    first, last = arrivals[0][0], arrivals[-1][0]
    assert first < 1.0 and last - first > 1.5, arrivals  # not held back until the end


def test_health_needs_no_key(address, tls):
    status, _, body = request(address, tls, "/healthz")
    assert status == 200 and body == b""


def test_body_over_the_limit_is_413(address, tls, inv):
    status, _, _ = request(address, tls, "/v1/chat/completions", "POST",
                           {"Authorization": "Bearer " + inv["gateway_api_keys"][0]}, b"x" * (65 * 1024))
    assert status == 413


def test_old_tls_is_refused(address):
    ctx = ssl.create_default_context(cafile=CA)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        request(address, ctx, "/healthz")


def test_certificate_names_the_container(address, tls):
    # The default context checks the name: the address is in the generated SANs.
    status, _, _ = request(address, tls, "/healthz")
    assert status == 200


def test_access_log_records_times_the_model_and_no_keys(host, address, tls, inv):
    request(address, tls, "/v1/models", headers={"Authorization": "Bearer " + inv["gateway_api_keys"][0]})
    post(address, tls, inv["gateway_api_keys"][0], "/v1/completions", {"model": "stub-model-b", "prompt": "hi"})
    post(address, tls, inv["gateway_api_keys"][0], "/v1/completions", {"model": "nope", "prompt": "hi"})
    lines = [json.loads(line) for line in host.file(ACCESS_LOG).content_string.splitlines()]
    routed = [e for e in lines if e["uri"] == "/v1/completions" and e["status"] == 200][-1]
    assert isinstance(routed["request_time"], float)
    assert routed["upstream_response_time"] != "" and routed["upstream_status"] == "200"
    assert (routed["upstream_addr"], routed["model"]) == ("127.0.0.1:8001", "stub-model-b")
    unknown = [e for e in lines if e["uri"] == "/v1/completions" and e["status"] == 404][-1]
    assert (unknown["model"], unknown["upstream_addr"]) == ("nope", "")
    listed = [e for e in lines if e["uri"] == "/v1/models" and e["status"] == 200][-1]
    assert isinstance(listed["request_time"], float) and listed["model"] == ""
    # What roles/monitoring's mtail program reads (its pattern, etc/mtail/llm-onprem-gateway.mtail.j2).
    mtail = re.compile(r'"uri":"(?P<uri>[^"]*)","status":(?P<status>\d+),.*"request_time":(?P<request_time>[0-9.]+),')
    assert all(mtail.search(line) for line in host.file(ACCESS_LOG).content_string.splitlines()[-3:])
    text = host.file(ACCESS_LOG).content_string
    assert all(key not in text for key in inv["gateway_api_keys"] + [inv["gateway_upstream_api_key"]])
    assert (routed["pool"], routed["side"]) == ("llm_onprem_pool_1", "")  # stub-model-b has no canary
    assert (listed["pool"], listed["side"]) == ("llm_onprem_instances", "")


def canary_run(address, tls, keys, model="stub-model-a"):
    """One request per key over one keepalive connection: the backend name that answered each."""
    conn = http.client.HTTPSConnection(address, 443, context=tls, timeout=10)
    seen = []
    try:
        for key in keys:
            conn.request("POST", "/v1/completions", body=json.dumps({"model": model, "prompt": "hi"}),
                         headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200, body
            seen.append(json.loads(body)["backend"])
    finally:
        conn.close()
    return seen


def test_canary_share_is_the_hash_and_near_the_percent(host, address, tls, inv):
    """1,000 clients (keys), one request each. Exact: each lands where its key's bucket says.
    Statistical: the candidate's share is within 3 binomial standard deviations of 5 %:
    sqrt(0.05 * 0.95 / 1000) = 0.69 %, so 5 % +- 2.07 % (2.93 % to 7.07 %)."""
    keys = inv["canary_keys"]
    seen = canary_run(address, tls, keys)
    assert seen == [backend_for("stub-model-a", k)[0] for k in keys]
    share = seen.count(CANDIDATE[0]) / len(keys)
    tolerance = 3 * (0.05 * 0.95 / len(keys)) ** 0.5
    assert abs(share - 0.05) <= tolerance, share
    print(f"canary share {share:.3f} over {len(keys)} keys (5 % +- {tolerance:.4f})")
    # The access log says which side answered, for monitoring to count.
    time.sleep(0.5)  # nginx writes a request's line as it finishes it
    lines = [e for e in map(json.loads, host.file(ACCESS_LOG).content_string.splitlines())
             if e["uri"] == "/v1/completions"][-len(keys):]
    assert [e["side"] for e in lines] == ["candidate" if b == CANDIDATE[0] else "stable" for b in seen]
    assert {(e["side"], e["pool"], e["upstream_addr"]) for e in lines} == {
        ("candidate", "llm_onprem_pool_2", CANDIDATE[1]), ("stable", "llm_onprem_pool_0", BACKENDS["stub-model-a"][1])}
    # Another model's requests never go to the candidate.
    assert set(canary_run(address, tls, keys[:200], "stub-model-b")) == {"stub-b"}


def test_canary_is_sticky_per_client(address, tls, inv):
    keys = inv["canary_keys"]
    candidates = [k for k in keys if backend_for("stub-model-a", k) == CANDIDATE][:5]
    stable = [k for k in keys if backend_for("stub-model-a", k) != CANDIDATE][:5]
    for key in candidates + stable:
        assert set(canary_run(address, tls, [key] * 20)) == {backend_for("stub-model-a", key)[0]}, key
    # The same key sent as x-api-key lands on the same side.
    status, _, out = post(address, tls, candidates[0], "/v1/completions", {"model": "stub-model-a"})
    assert status == 200
    status, _, out = request(address, tls, "/v1/completions", "POST", {"X-Api-Key": candidates[0]},
                             json.dumps({"model": "stub-model-a"}))
    assert status == 200 and json.loads(out)["backend"] == CANDIDATE[0]


def test_canary_candidate_is_left_out_of_the_other_paths(address, tls, inv):
    """/v1/models lists the model once; the paths that go to any instance never reach the candidate."""
    key = inv["gateway_api_keys"][0]
    for _ in range(30):
        status, _, out = request(address, tls, "/metrics", headers={"Authorization": "Bearer " + key})
        assert status == 200 and json.loads(out)["backend"] in ("stub-a", "stub-b")


def test_site_and_keys_are_root_only(host):
    site = host.file("/etc/nginx/sites-available/llm-onprem-gateway.conf")
    assert site.user == "root" and site.mode == 0o600
    router = host.file("/etc/nginx/njs/llm-onprem-gateway.js")
    assert (router.user, router.group, router.mode) == ("root", "root", 0o644)
    assert (host.file("/etc/nginx/njs").user, host.file("/etc/nginx/njs").mode) == ("root", 0o755)
    with open(Path(__file__).resolve().parents[3] / "roles/gateway/files/llm-onprem-gateway.js", encoding="utf-8") as f:
        assert router.content_string == f.read()
    assert host.package("libnginx-mod-http-js").is_installed
    assert "ngx_http_js_module.so" in host.check_output("cat /etc/nginx/modules-enabled/*.conf")
    assert host.file("/etc/nginx/sites-enabled/llm-onprem-gateway.conf").linked_to == site.path
    assert not host.file("/etc/nginx/sites-enabled/default").exists
    for key in ("/etc/llm-onprem/gateway/tls/server.key", "/etc/llm-onprem/gateway/tls/ca.key"):
        assert host.file(key).mode == 0o600 and host.file(key).user == "root"
    nginx = host.process.filter(comm="nginx")
    assert nginx and all(inv_key not in p.args for p in nginx for inv_key in ("Bearer", "molecule"))


def test_fetched_ca_is_the_hosts(host):
    with open(CA, encoding="utf-8") as f:
        assert f.read() == host.file("/etc/llm-onprem/gateway/tls/ca.crt").content_string


def test_firewall_table_is_live_and_persistent(host):
    assert host.service("llm-onprem-firewall.service").is_enabled
    ruleset = host.check_output("nft list table inet llm_onprem")
    assert "policy drop;" in ruleset
    assert "tcp dport 443 ip saddr @gateway_ipv4 accept" in ruleset
    assert "10.88.0.0/16" in ruleset and "127.0.0.0/8" in ruleset
    assert "tcp dport 22 ip saddr @ssh_ipv4 accept" in ruleset


def test_only_the_gateway_port_is_reachable(host, address):
    # The stub backend is on loopback; port 80 (Debian's default site) is gone.
    import socket

    listening = host.check_output("ss -H -ltn")
    assert ":80 " not in listening
    with socket.create_connection((address, 443), timeout=5):
        pass
    # A listener the firewall does not open: the connection times out (dropped).
    host.check_output("systemd-run --unit=gateway-probe-9000 /usr/bin/python3 -m http.server 9000 --bind 0.0.0.0")
    try:
        host.check_output("for i in $(seq 50); do ss -H -ltn | grep -q ':9000 ' && break; sleep 0.1; done")
        with pytest.raises(OSError):
            socket.create_connection((address, 9000), timeout=3)
    finally:
        host.run("systemctl stop gateway-probe-9000")


def test_nginx_is_enabled_and_running(host):
    svc = host.service("nginx")
    assert svc.is_running and svc.is_enabled


def test_local_facts_name_the_gateway_for_other_roles(host):
    """What the monitoring role reads back (ansible_local.llm_onprem_gateway): no secrets."""
    fact_file = host.file("/etc/ansible/facts.d/llm_onprem_gateway.fact")
    assert (fact_file.user, fact_file.mode) == ("root", 0o644)
    fact = json.loads(fact_file.content_string)
    assert fact == {"port": 443, "address": "127.0.0.1", "server_name": "llm-onprem-gateway",
                    "cert_file": "/etc/llm-onprem/gateway/tls/server.crt", "health_path": "/healthz",
                    "access_log": ACCESS_LOG, "snippet_dir": "/etc/nginx/llm-onprem-gateway.d",
                    "nginx_check": "/usr/local/sbin/llm-onprem-nginx-check"}
    assert "molecule" not in fact_file.content_string


def test_added_locations_are_checked_inside_the_live_site(host):
    """Another role's location file is checked by nginx -t inside the live site
    (--snippet) before it is written; a broken one is refused, the live files untouched."""
    snippets = host.file("/etc/nginx/llm-onprem-gateway.d")
    assert snippets.is_directory and (snippets.user, snippets.mode) == ("root", 0o700)
    before = host.check_output("ls -A /etc/nginx/llm-onprem-gateway.d; sha256sum /etc/nginx/sites-available/*")
    host.check_output("printf 'location /extra/ { return 204; }\\n' > /root/good.conf")
    host.check_output("printf 'location /extra/ { return 204 }\\n' > /root/bad.conf")
    assert host.run("/usr/local/sbin/llm-onprem-nginx-check --snippet extra /root/good.conf").rc == 0
    # The same location twice (the candidate clashes with the site's own "location /"): refused.
    host.check_output("printf 'location / { return 204; }\\n' > /root/clash.conf")
    for bad in ("/root/bad.conf", "/root/clash.conf"):
        result = host.run(f"/usr/local/sbin/llm-onprem-nginx-check --snippet extra {bad}")
        assert result.rc != 0, bad
    assert host.check_output("ls -A /etc/nginx/llm-onprem-gateway.d; sha256sum /etc/nginx/sites-available/*") == before
