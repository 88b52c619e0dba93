"""Unit tests of module_utils/gateway.py: the gateway_preflight module's networks and the routing by model name.

Who holds the gateway port is tested with the listen_port module, in test_listen_port.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "module_utils") not in sys.path:
    sys.path.insert(0, str(ROOT / "module_utils"))

import gateway as gw  # noqa: E402


@pytest.mark.parametrize(
    ("items", "ipv4", "ipv6", "n_errors"),
    [
        (["10.88.0.0/16", "127.0.0.0/8"], ["10.88.0.0/16", "127.0.0.0/8"], [], 0),
        (["192.0.2.7"], ["192.0.2.7/32"], [], 0),
        (["fd00::/8", "10.0.0.0/8"], ["10.0.0.0/8"], ["fd00::/8"], 0),
        (["10.0.0.1/8"], [], [], 1),  # host bits set
        (["10.0.0.0/33"], [], [], 1),
        (["not-a-network", "10.0.0.0/8"], ["10.0.0.0/8"], [], 1),
        ([], [], [], 0),
        ("10.0.0.0/8", [], [], 1),  # a string, not a list
    ],
)
def test_parse_networks(items, ipv4, ipv6, n_errors):
    got4, got6, errors = gw.parse_networks(items)
    assert (got4, got6, len(errors)) == (ipv4, ipv6, n_errors)


@pytest.mark.parametrize(
    ("address", "networks", "allowed"),
    [
        ("10.88.0.1", ["10.88.0.0/16"], True),
        ("10.89.0.1", ["10.88.0.0/16"], False),
        ("::ffff:10.88.0.1", ["10.88.0.0/16"], True),  # IPv4-mapped, as sshd may report it
        ("fd00::5", ["fd00::/8"], True),
        ("fd00::5", ["10.0.0.0/8"], False),
        ("fe80::1%eth0", ["fe80::/10"], True),
        ("garbage", ["0.0.0.0/0"], False),
        ("10.0.0.1", [], False),
    ],
)
def test_address_allowed(address, networks, allowed):
    assert gw.address_allowed(address, networks) is allowed


INSTANCES = [
    {"name": "main", "model": "m32", "served_model_name": "r1", "port": 8000},
    {"name": "coder", "model": "c7", "port": 8001},  # served as its name
]


@pytest.mark.parametrize(
    ("upstream", "instances", "model"),
    [
        ({"name": "main", "port": 8000}, INSTANCES, "r1"),
        ({"name": "x", "port": 8001}, INSTANCES, "coder"),  # served_model_name defaults to the name
        ({"name": "main", "port": "8000"}, INSTANCES, "r1"),  # a port as an inventory string
        ({"name": "main", "port": 8000, "host": "localhost"}, INSTANCES, "r1"),
        ({"name": "main", "port": 8000, "host": "::1"}, INSTANCES, "r1"),
        ({"name": "main", "port": 8000, "model": "other"}, INSTANCES, "other"),  # its own model wins
        ({"name": "main", "port": 8000, "model": None}, INSTANCES, "r1"),
        ({"name": "far", "port": 8000, "host": "10.0.0.5"}, INSTANCES, None),  # another host's port 8000
        ({"name": "far", "port": 8000, "host": "10.0.0.5", "model": "r1"}, INSTANCES, "r1"),
        ({"name": "main", "port": 8002}, INSTANCES, None),  # no instance there
        ({"name": "main", "port": 8000}, None, None),  # llm_service_instances not defined
        ({"name": "main", "port": 8000}, [], None),
        ({"name": "main", "port": 8000, "model": "stub-a"}, None, "stub-a"),
        ("not a dict", INSTANCES, None),
    ],
)
def test_upstream_model(upstream, instances, model):
    assert gw.upstream_model(upstream, instances) == model


def test_model_pools_group_replicas_in_first_seen_order():
    upstreams = [
        {"name": "main", "port": 8000},
        {"name": "coder", "port": 8001},
        {"name": "main-b", "port": 8000, "host": "10.0.0.5", "model": "r1", "weight": 3},
    ]
    pools = gw.model_pools(upstreams, INSTANCES)
    assert [(p["name"], p["model"], [u["name"] for u in p["upstreams"]]) for p in pools] == [
        ("llm_onprem_pool_0", "r1", ["main", "main-b"]),
        ("llm_onprem_pool_1", "coder", ["coder"]),
    ]
    assert pools[0]["upstreams"][1] is upstreams[2]  # entries as given (host, weight)
    assert gw.model_routes(pools) == {"models": {"r1": "llm_onprem_pool_0", "coder": "llm_onprem_pool_1"},
                                      "pools": ["llm_onprem_pool_0", "llm_onprem_pool_1"], "canary": {}}


@pytest.mark.parametrize(
    ("upstreams", "instances", "routes"),
    [
        # Nothing names a model: one group, every request goes there whatever its model.
        ([{"name": "a", "port": 8000}, {"name": "b", "port": 8001}], None,
         {"models": {}, "pools": ["llm_onprem_pool_0"], "canary": {}}),
        ([{"name": "a", "port": 8000, "model": "x"}], None, {"models": {"x": "llm_onprem_pool_0"},
                                                             "pools": ["llm_onprem_pool_0"], "canary": {}}),
        ([], INSTANCES, {"models": {}, "pools": [], "canary": {}}),
        (None, INSTANCES, {"models": {}, "pools": [], "canary": {}}),
    ],
)
def test_model_routes(upstreams, instances, routes):
    assert gw.model_routes(gw.model_pools(upstreams, instances)) == routes


CANARY = [
    {"name": "main", "port": 8000},
    {"name": "coder", "port": 8001},
    {"name": "main-next", "port": 8002, "model": "r1", "canary_percent": 5},
]


def test_a_candidate_gets_a_pool_after_the_stable_ones():
    pools = gw.model_pools(CANARY, INSTANCES)
    assert [(p["name"], p["model"], p["candidate"], [u["name"] for u in p["upstreams"]]) for p in pools] == [
        ("llm_onprem_pool_0", "r1", False, ["main"]),
        ("llm_onprem_pool_1", "coder", False, ["coder"]),
        ("llm_onprem_pool_2", "r1", True, ["main-next"]),
    ]
    assert pools[2]["canary_percent"] == 5
    # Adding the candidate renames no stable pool.
    assert [p["name"] for p in gw.model_pools(CANARY[:2], INSTANCES)] == ["llm_onprem_pool_0", "llm_onprem_pool_1"]
    assert gw.model_routes(pools) == {
        "models": {"r1": "llm_onprem_pool_0", "coder": "llm_onprem_pool_1"},
        "pools": ["llm_onprem_pool_0", "llm_onprem_pool_1"],  # /v1/models: the stable pools list r1 already
        "canary": {"r1": {"pool": "llm_onprem_pool_2", "percent": 5, "threshold": 500}},
    }


@pytest.mark.parametrize(
    ("upstreams", "canary"),
    [
        # 0: the rollback state, configured but sent nothing; 100: everything; fractions to 0.01 %.
        ([{"name": "a", "port": 1, "model": "m"}, {"name": "b", "port": 2, "model": "m", "canary_percent": 0}],
         {"m": {"pool": "llm_onprem_pool_1", "percent": 0, "threshold": 0}}),
        ([{"name": "a", "port": 1, "model": "m"}, {"name": "b", "port": 2, "model": "m", "canary_percent": 100}],
         {"m": {"pool": "llm_onprem_pool_1", "percent": 100, "threshold": 10000}}),
        ([{"name": "a", "port": 1, "model": "m"}, {"name": "b", "port": 2, "model": "m", "canary_percent": 2.5}],
         {"m": {"pool": "llm_onprem_pool_1", "percent": 2.5, "threshold": 250}}),
        # null is no canary; a candidate alone or of an unknown model is served as stable (inventory checks refuse).
        ([{"name": "a", "port": 1, "model": "m"}, {"name": "b", "port": 2, "model": "m", "canary_percent": None}], {}),
        ([{"name": "b", "port": 2, "model": "m", "canary_percent": 5}], {}),
        ([{"name": "a", "port": 1}, {"name": "b", "port": 2, "canary_percent": 5}], {}),
        ([{"name": "a", "port": 1, "model": "m"}, {"name": "b", "port": 2, "model": "m", "canary_percent": True}], {}),
    ],
    ids=["zero", "hundred", "fraction", "null", "alone", "unknown-model", "bool"],
)
def test_canary_routes(upstreams, canary):
    assert gw.model_routes(gw.model_pools(upstreams))["canary"] == canary


@pytest.mark.parametrize(
    ("percent", "threshold"),
    [(0, 0), (0.001, 0), (0.01, 1), (5, 500), (12.345, 1234), (99.99, 9999), (100, 10000), (250, 10000), (-1, 0)],
)
def test_canary_threshold(percent, threshold):
    assert gw.canary_threshold(percent) == threshold


def test_canary_bucket_is_stable_and_in_range():
    assert gw.canary_bucket("abc") == 0xBA7816BF % 10000  # sha256("abc") starts ba7816bf
    assert gw.canary_bucket("abc") == gw.canary_bucket("abc")
    buckets = [gw.canary_bucket(f"key{i}") for i in range(2000)]
    assert all(0 <= b < 10000 for b in buckets) and len(set(buckets)) > 1500


@pytest.mark.parametrize(
    ("name", "ok"),
    [("r1", True), ("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", True), ("llama3:8b", True), ("a+b@v2#1", True),
     ("", False), ("two words", False), ('say"hi"', False), ("it's", False), ("back\\slash", False),
     ("cost$", False), ("tab\there", False), ("modèle", False), ("x" * 257, False)],
)
def test_model_name_pattern(name, ok):
    assert bool(gw.MODEL_RE.match(name)) is ok
