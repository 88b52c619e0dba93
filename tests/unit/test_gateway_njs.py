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
                llm_onprem_model: ''},
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


def err(status, kind, message, param):
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def listing(*ids):
    return {"status": 200, "responseText": json.dumps({"object": "list", "data": [
        {"id": i, "object": "model", "owned_by": "vllm"} for i in ids]})}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if NJS is None:
        pytest.skip("njs is not installed (Debian package njs; tests/harness/install-deps.sh installs it)")
    work = tmp_path_factory.mktemp("njs")
    (work / "driver.js").write_text(DRIVER)

    def call(handler, routes, method="POST", body=None, replies=None, body_in_file=False):
        case = {"handler": handler, "routes": routes, "method": method, "body": body, "replies": replies or {},
                "body_in_file": body_in_file}
        proc = subprocess.run([NJS, "-q", "-t", "module", "-p", str(ROUTER.parent), str(work / "driver.js"),
                               json.dumps(case)], capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        lines = proc.stdout.strip().splitlines()
        assert len(lines) == 1, f"the handler must answer exactly once: {proc.stdout}"
        return json.loads(lines[0])
    return call


def test_the_tables_are_what_the_router_expects():
    assert TWO == {"models": {"stub-a": "llm_onprem_pool_0", "stub-b": "llm_onprem_pool_1"},
                   "pools": ["llm_onprem_pool_0", "llm_onprem_pool_1"]}
    assert ONE == {"models": {"r1": "llm_onprem_pool_0"}, "pools": ["llm_onprem_pool_0"]}
    assert BLIND == {"models": {}, "pools": ["llm_onprem_pool_0"]}


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
