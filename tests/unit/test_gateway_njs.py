"""Unit tests of the gateway's model name router, roles/gateway/files/llm-onprem-gateway.js.

The real file runs in the command-line njs (Debian's package njs 0.7.9, the engine
of the libnginx-mod-http-js the role installs; tests/harness/install-deps.sh
installs it) against a stand-in for nginx's request object: the request's method
and body, the routing table module_utils/gateway.py makes (as the site's
$llm_onprem_routes carries it), and for /v1/models the replies of each upstream
group. Each case records what the handler did: the status and JSON body it
answered, or the location it redirected to with the upstream group and model it
set. The whole request path through nginx is tested in molecule/gateway.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "module_utils") not in sys.path:
    sys.path.insert(0, str(ROOT / "module_utils"))

import gateway as gw  # noqa: E402

ROUTER = ROOT / "roles" / "gateway" / "files" / "llm-onprem-gateway.js"
NJS = shutil.which("njs")

# A stand-in for ngx.http request object: r.return, r.internalRedirect, r.subrequest,
# r.variables, r.requestText (throws as nginx does when the body went to a file).
DRIVER = """
import router from 'llm-onprem-gateway.js';

var c = JSON.parse(process.argv[process.argv.length - 1]);
var logs = [];
var r = {
    method: c.method,
    variables: {llm_onprem_routes: JSON.stringify(c.routes), llm_onprem_pool: 'llm_onprem_instances',
                llm_onprem_model: '', llm_onprem_side: '', llm_onprem_bearer_ok: c.bearer_ok ? '1' : '0'},
    headersIn: c.headers,
    headersOut: {},
    subrequests: [],
    error: function (m) { logs.push('error: ' + m); },
    warn: function (m) { logs.push('warn: ' + m); },
    subrequest: function (uri) {
        r.subrequests.push(uri);
        var reply = c.replies[uri];
        return reply === 'reject' ? Promise.reject(new Error('subrequest failed')) : Promise.resolve(reply);
    },
    return: function (status, body) { done({status: status, body: JSON.parse(body)}); },
    internalRedirect: function (uri) { done({redirect: uri}); }
};
Object.defineProperty(r, 'requestText', {get: function () {
    if (c.body_in_file) {
        throw new Error('request body is in a file');
    }
    return c.body === null ? undefined : c.body;
}});

function done(what) {
    what.pool = r.variables.llm_onprem_pool;
    what.model = r.variables.llm_onprem_model;
    what.side = r.variables.llm_onprem_side;
    what.content_type = r.headersOut['Content-Type'] || null;
    what.subrequests = r.subrequests;
    what.logs = logs;
    console.log(JSON.stringify(what));
}

router[c.handler](r);
"""

TWO = gw.model_routes(gw.model_pools([{"name": "a", "port": 8000, "model": "stub-a"},
                                      {"name": "b", "port": 8001, "model": "stub-b"}]))
ONE = gw.model_routes(gw.model_pools([{"name": "main", "port": 8000}], [{"name": "main", "port": 8000,
                                                                           "served_model_name": "r1"}]))
BLIND = gw.model_routes(gw.model_pools([{"name": "main", "port": 8000}]))
CLIENT_KEY = "test0client0key0aaaaaaaaaaaaaaaaaaaaaaaaaaaa"


def canary_routes(percent):
    """TWO plus a candidate for stub-a (its own group, llm_onprem_pool_2) at ``percent``."""
    return gw.model_routes(gw.model_pools([{"name": "a", "port": 8000, "model": "stub-a"},
                                           {"name": "b", "port": 8001, "model": "stub-b"},
                                           {"name": "a-next", "port": 8002, "model": "stub-a",
                                            "canary_percent": percent}]))


def err(status, kind, message, param):
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def listing(*ids):
    return {"status": 200, "responseText": json.dumps({"object": "list", "data": [
        {"id": i, "object": "model", "owned_by": "vllm"} for i in ids]})}


def _njs_script(tmp_path_factory, source, timeout):
    """A function that runs ``source`` as an njs module beside the router with one argument; its stdout."""
    if NJS is None:
        pytest.skip("njs is not installed (Debian package njs; tests/harness/install-deps.sh installs it)")
    script = tmp_path_factory.mktemp("njs") / "script.js"
    script.write_text(source)

    def run_script(argument):
        proc = subprocess.run([NJS, "-q", "-t", "module", "-p", str(ROUTER.parent), str(script), argument],
                              capture_output=True, text=True, timeout=timeout, check=False)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        return proc.stdout
    return run_script


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    driver = _njs_script(tmp_path_factory, DRIVER, timeout=30)

    def call(handler, routes, method="POST", body=None, replies=None, body_in_file=False, headers=None,
             bearer_ok=True):
        """``headers`` (default: the client key as bearer) and whether the site's bearer map matched."""
        headers = {"Authorization": "Bearer " + CLIENT_KEY} if headers is None else headers
        case = {"handler": handler, "routes": routes, "method": method, "body": body, "replies": replies or {},
                "body_in_file": body_in_file, "headers": headers, "bearer_ok": bearer_ok}
        out = driver(json.dumps(case))
        lines = out.strip().splitlines()
        assert len(lines) == 1, f"the handler must answer exactly once: {out}"
        return json.loads(lines[0])
    return call


def test_the_tables_are_what_the_router_expects():
    assert TWO == {"models": {"stub-a": "llm_onprem_pool_0", "stub-b": "llm_onprem_pool_1"},
                   "pools": ["llm_onprem_pool_0", "llm_onprem_pool_1"], "canary": {}}
    assert ONE == {"models": {"r1": "llm_onprem_pool_0"}, "pools": ["llm_onprem_pool_0"], "canary": {}}
    assert BLIND == {"models": {}, "pools": ["llm_onprem_pool_0"], "canary": {}}
    assert canary_routes(5) == {"models": {"stub-a": "llm_onprem_pool_0", "stub-b": "llm_onprem_pool_1"},
                                "pools": ["llm_onprem_pool_0", "llm_onprem_pool_1"],
                                "canary": {"stub-a": {"pool": "llm_onprem_pool_2", "percent": 5, "threshold": 500}}}


# (case id, routes, method, body, expected pool, expected logged model)
ROUTED = [
    ("first-model", TWO, "POST", '{"model": "stub-a", "messages": []}', "llm_onprem_pool_0", "stub-a"),
    ("second-model", TWO, "POST", '{"model": "stub-b", "stream": true}', "llm_onprem_pool_1", "stub-b"),
    ("only-model-named", ONE, "POST", '{"model": "r1"}', "llm_onprem_pool_0", "r1"),
    ("only-model-missing", ONE, "POST", '{"prompt": "hi"}', "llm_onprem_pool_0", ""),
    ("only-model-null", ONE, "POST", '{"model": null}', "llm_onprem_pool_0", ""),
    ("no-names-known-any-model", BLIND, "POST", '{"model": "whatever"}', "llm_onprem_pool_0", "whatever"),
    ("no-names-known-no-model", BLIND, "POST", '{}', "llm_onprem_pool_0", ""),
    ("get-goes-to-every-instance", TWO, "GET", None, "llm_onprem_instances", ""),
    ("delete-goes-to-every-instance", TWO, "DELETE", None, "llm_onprem_instances", ""),
]


@pytest.mark.parametrize(("routes", "method", "body", "pool", "model"), [c[1:] for c in ROUTED],
                         ids=[c[0] for c in ROUTED])
def test_route_redirects_to_the_models_group(run, routes, method, body, pool, model):
    got = run("route", routes, method, body)
    assert got["redirect"] == "@llm_onprem_route", got
    assert (got["pool"], got["model"]) == (pool, model)


NOT_JSON = "The request body is not valid JSON: "
# (case id, routes, body, status, error type, message (or its start), param)
REFUSED = [
    ("unknown-model", TWO, '{"model": "gpt-4o"}', 404, "NotFoundError", "The model `gpt-4o` does not exist.", "model"),
    ("unknown-model-one", ONE, '{"model": "r2"}', 404, "NotFoundError", "The model `r2` does not exist.", "model"),
    ("prototype-name", TWO, '{"model": "constructor"}', 404, "NotFoundError", "The model `constructor` does not exist.",
     "model"),
    ("proto-name", TWO, '{"model": "__proto__"}', 404, "NotFoundError", "The model `__proto__` does not exist.", "model"),
    ("missing-model-several", TWO, '{"messages": []}', 400, "BadRequestError",
     'The request names no model and this gateway serves several: stub-a, stub-b. Set "model" to one of them.', "model"),
    ("array-body-several", TWO, '[{"model": "stub-a"}]', 400, "BadRequestError", "The request names no model", "model"),
    ("model-not-a-string", TWO, '{"model": ["stub-a"]}', 400, "BadRequestError", "The model must be a string.", "model"),
    ("bad-json", TWO, '{"model": "stub-a",', 400, "BadRequestError", NOT_JSON, None),
    ("bad-json-one-model", ONE, "model=r1", 400, "BadRequestError", NOT_JSON, None),
    ("bad-json-no-names", BLIND, "{'model': 'x'}", 400, "BadRequestError", NOT_JSON, None),
    ("empty-body", TWO, "", 400, "BadRequestError", NOT_JSON, None),
    ("no-body", ONE, None, 400, "BadRequestError", NOT_JSON, None),
]


@pytest.mark.parametrize(("routes", "body", "status", "kind", "message", "param"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])
def test_route_refuses_in_vllms_error_format(run, routes, body, status, kind, message, param):
    got = run("route", routes, "POST", body)
    assert "redirect" not in got, got
    assert got["status"] == status and got["content_type"] == "application/json"
    error = got["body"]["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == (kind, param, status)
    assert error["message"].startswith(message), error["message"]


def test_unknown_model_is_exactly_vllms_answer(run):
    """vLLM's OpenAIServing._check_model (vllm/entrypoints/openai/engine/serving.py) answers 404 with this body."""
    got = run("route", TWO, "POST", '{"model": "nope"}')
    assert got["body"] == err(404, "NotFoundError", "The model `nope` does not exist.", "model")


def test_a_body_in_a_file_is_a_server_error_not_a_guess(run):
    got = run("route", TWO, "POST", '{"model": "stub-a"}', body_in_file=True)
    assert got["status"] == 500 and got["body"]["error"]["type"] == "InternalServerError"
    assert any("request body is in a file" in line for line in got["logs"])


def test_the_logged_model_name_is_bounded(run):
    got = run("route", BLIND, "POST", json.dumps({"model": "m" * 5000}))
    assert got["redirect"] == "@llm_onprem_route" and got["model"] == "m" * 256


MODELS0, MODELS1 = "/_llm_onprem/models/llm_onprem_pool_0", "/_llm_onprem/models/llm_onprem_pool_1"


def test_models_merges_every_group_and_drops_duplicates(run):
    got = run("models", TWO, "GET", replies={MODELS0: listing("stub-a", "shared"), MODELS1: listing("shared", "stub-b")})
    assert got["status"] == 200 and got["content_type"] == "application/json"
    assert got["subrequests"] == [MODELS0, MODELS1]
    assert got["body"]["object"] == "list"
    assert [m["id"] for m in got["body"]["data"]] == ["stub-a", "shared", "stub-b"]
    assert got["body"]["data"][0] == {"id": "stub-a", "object": "model", "owned_by": "vllm"}


@pytest.mark.parametrize("failure", [
    {"status": 502, "responseText": "<html>502</html>"},
    {"status": 401, "responseText": '{"error": "wrong key"}'},
    {"status": 200, "responseText": "not json"},
    {"status": 200, "responseText": '{"object": "list"}'},
    "reject",
], ids=["502", "401", "not-json", "no-data", "subrequest-failed"])
def test_models_lists_what_answers_and_warns_about_the_rest(run, failure):
    got = run("models", TWO, "GET", replies={MODELS0: failure, MODELS1: listing("stub-b")})
    assert got["status"] == 200
    assert [m["id"] for m in got["body"]["data"]] == ["stub-b"]
    assert any("llm_onprem_pool_0" in line for line in got["logs"]), got["logs"]


def test_models_without_any_answer_is_502(run):
    got = run("models", TWO, "GET", replies={MODELS0: {"status": 502, "responseText": ""}, MODELS1: "reject"})
    assert got["status"] == 502
    assert got["body"] == err(502, "BadGatewayError", "No model instance answered /v1/models.", None)


def test_models_with_another_method_goes_to_the_instances(run):
    got = run("models", TWO, "POST", body="{}")
    assert got["redirect"] == "@llm_onprem_route" and got["pool"] == "llm_onprem_instances"
    assert got["subrequests"] == []


# The canary split. SPLIT runs the real route() once per key in one njs process
# (a fresh stand-in request for each, the key as its bearer) and prints the group
# each went to; BUCKETS prints the router's bucket of each key.
SPLIT = """
import router from 'llm-onprem-gateway.js';

var c = JSON.parse(require('fs').readFileSync(process.argv[process.argv.length - 1], 'utf8'));
var out = [];
c.keys.forEach(function (key) {
    if (c.buckets) {
        return;
    }
    var r = {
        method: 'POST',
        variables: {llm_onprem_routes: JSON.stringify(c.routes), llm_onprem_pool: 'llm_onprem_instances',
                    llm_onprem_model: '', llm_onprem_side: '', llm_onprem_bearer_ok: '1'},
        headersIn: {Authorization: 'Bearer ' + key},
        headersOut: {},
        requestText: c.body,
        error: function () {}, warn: function () {},
        return: function (status) { out.push('status ' + status); },
        internalRedirect: function () { out.push(r.variables.llm_onprem_pool + ' ' + r.variables.llm_onprem_side); }
    };
    router.route(r);
});
// One line each: njs's console.log breaks long lines.
(c.buckets ? c.keys.map(function (key) { return router.bucket(key); }) : out).forEach(function (x) {
    console.log(JSON.stringify(x));
});
"""
# Synthetic client keys, shaped as the site's (the same prefix, a running number).
KEYS = [f"synthetic0client0key0{i:06d}0xxxxxxxxxxxx" for i in range(10000)]
# (stable group, candidate group) of canary_routes.
STABLE, CANDIDATE = "llm_onprem_pool_0 stable", "llm_onprem_pool_2 candidate"


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    script = _njs_script(tmp_path_factory, SPLIT, timeout=120)
    case = tmp_path_factory.mktemp("njs-split") / "case.json"

    def call(routes, keys, body='{"model": "stub-a"}', buckets=False):
        # The keys in a file: 10,000 of them are more than one command-line argument may hold.
        case.write_text(json.dumps({"routes": routes, "keys": keys, "body": body, "buckets": buckets}))
        return [json.loads(line) for line in script(str(case)).splitlines()]
    return call


def test_the_routers_bucket_is_the_python_one(split):
    keys = KEYS[:2000] + ["a", "molecule.client+key/two=2-_bbbbbbbbbbbbbbbbbbbbb", "é-not-ascii"]
    assert split(None, keys, buckets=True) == [gw.canary_bucket(k) for k in keys]


def test_canary_bucket_is_sha256s_first_four_bytes():
    # sha256("abc") = ba7816bf...: 0xba7816bf = 3128432319, mod 10000 = 2319.
    assert gw.canary_bucket("abc") == 2319
    assert {gw.canary_bucket(k) for k in KEYS[:100]} <= set(range(10000))


@pytest.mark.parametrize("percent", [0, 5, 25, 50, 100, 0.5])
def test_the_split_is_the_bucket_below_the_threshold(split, percent):
    """Every key goes where its bucket says (exactly), and the observed share is within
    3 binomial standard deviations of the percent: for n = 10,000 keys and p = 5 %,
    sqrt(p (1 - p) / n) = 0.22 %, so 5 % +- 0.65 % (at 50 %: +- 1.5 %)."""
    got = split(canary_routes(percent), KEYS)
    threshold = gw.canary_threshold(percent)
    assert got == [CANDIDATE if gw.canary_bucket(k) < threshold else STABLE for k in KEYS]
    share = got.count(CANDIDATE) / len(KEYS)
    p = percent / 100
    assert abs(share - p) <= 3 * (p * (1 - p) / len(KEYS)) ** 0.5 + 1e-9, (percent, share)
    if percent == 0:
        assert CANDIDATE not in got  # the rollback state: the candidate stays configured, gets nothing
    if percent == 100:
        assert STABLE not in got


def test_the_split_is_sticky_and_monotone(split):
    steps = [0, 1, 5, 25, 50, 100]
    sides = {p: split(canary_routes(p), KEYS[:3000]) for p in steps}
    assert split(canary_routes(5), KEYS[:3000]) == sides[5]  # the same keys, the same sides
    for low, high in zip(steps, steps[1:], strict=False):
        moved = [(a, b) for a, b in zip(sides[low], sides[high], strict=True) if a != b]
        assert all(m == (STABLE, CANDIDATE) for m in moved), (low, high)  # raising only moves to the candidate


def test_the_split_leaves_other_models_and_nameless_requests_alone(split):
    routes = canary_routes(100)
    assert set(split(routes, KEYS[:50], body='{"model": "stub-b"}')) == {"llm_onprem_pool_1 "}
    assert set(split(routes, KEYS[:50], body='{"model": "nope"}')) == {"status 404"}
    one = gw.model_routes(gw.model_pools([{"name": "a", "port": 8000, "model": "m"},
                                          {"name": "c", "port": 8001, "model": "m", "canary_percent": 100}]))
    assert set(split(one, KEYS[:50], body="{}")) == {"llm_onprem_pool_1 candidate"}  # the only model, split too


@pytest.mark.parametrize(("headers", "bearer_ok", "key"), [
    ({"Authorization": "Bearer " + CLIENT_KEY}, True, CLIENT_KEY),
    ({"Authorization": "bearer   " + CLIENT_KEY}, True, CLIENT_KEY),
    ({"X-Api-Key": CLIENT_KEY}, False, CLIENT_KEY),
    ({"Authorization": "Bearer not-the-checked-one", "X-Api-Key": CLIENT_KEY}, False, CLIENT_KEY),
], ids=["bearer", "bearer-lowercase", "x-api-key", "bad-bearer-good-header"])
def test_the_side_follows_the_key_the_site_checked(run, headers, bearer_ok, key):
    percent = 50
    case = run("route", canary_routes(percent), "POST", '{"model": "stub-a"}', headers=headers, bearer_ok=bearer_ok)
    expected = "candidate" if gw.canary_bucket(key) < gw.canary_threshold(percent) else "stable"
    assert case["side"] == expected and case["pool"] == ("llm_onprem_pool_2" if expected == "candidate"
                                                         else "llm_onprem_pool_0")
    assert key not in json.dumps(case["logs"])
