"""Verify the gateway from the control machine, through the container's address.

Every request goes over the network from this machine (10.88.0.1) to nginx in the
container, with TLS verified against the CA the role fetched (its certificate names
the container's address). Values asserted: molecule.yml's inventory (test keys, the
stub on 127.0.0.1:8000, a 64k body limit) and the role's defaults (/healthz, port 443).
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
from pathlib import Path

import pytest
import yaml

CA = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "gateway-ca.crt")
ACCESS_LOG = "/var/log/nginx/llm-onprem-gateway.access.log"
PROTECTED = ["/v1/models", "/v1/chat/completions", "/metrics", "/", "/anything"]


@pytest.fixture(scope="module")
def inv():
    """The scenario's inventory values (the verifier connects with podman, not Ansible)."""
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "molecule.yml").read_text())
    return config["provisioner"]["inventory"]["group_vars"]["all"]


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


@pytest.mark.parametrize("path", PROTECTED)
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


def test_post_body_reaches_the_backend(address, tls, inv):
    body = json.dumps({"model": "stub", "messages": [{"role": "user", "content": "x" * 1000}]})
    status, _, out = request(address, tls, "/v1/chat/completions", "POST",
                             {"Authorization": "Bearer " + inv["gateway_api_keys"][1], "Content-Type": "application/json"},
                             body)
    assert status == 200 and json.loads(out)["body_bytes"] == len(body)


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


def test_access_log_records_times_and_no_keys(host, address, tls, inv):
    request(address, tls, "/v1/models", headers={"Authorization": "Bearer " + inv["gateway_api_keys"][0]})
    lines = [json.loads(line) for line in host.file(ACCESS_LOG).content_string.splitlines()]
    last = [e for e in lines if e["uri"] == "/v1/models" and e["status"] == 200][-1]
    assert isinstance(last["request_time"], float)
    assert last["upstream_response_time"] != "" and last["upstream_status"] == "200"
    assert last["upstream_addr"] == "127.0.0.1:8000"
    text = host.file(ACCESS_LOG).content_string
    assert all(key not in text for key in inv["gateway_api_keys"] + [inv["gateway_upstream_api_key"]])


def test_site_and_keys_are_root_only(host):
    site = host.file("/etc/nginx/sites-available/llm-onprem-gateway.conf")
    assert site.user == "root" and site.mode == 0o600
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
