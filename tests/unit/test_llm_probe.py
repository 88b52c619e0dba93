"""Unit tests of module_utils/llm_probe.py and library/llm_probe.py against a local fake vLLM."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import LIBRARY, MODULE_UTILS

if str(MODULE_UTILS) not in sys.path:
    sys.path.insert(0, str(MODULE_UTILS))

import llm_probe as p  # noqa: E402

KEY = "k" * 40

# A real vLLM 0.32 answer with the deepseek_r1 reasoning parser (tiny model).
CHAT = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "tiny",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "The service is up.",
                                             "reasoning": "The user asks if the service is up.", "tool_calls": []},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 18, "total_tokens": 40, "completion_tokens": 22}}


@pytest.mark.parametrize("base, path, url", [
    ("http://127.0.0.1:8000", "/health", "http://127.0.0.1:8000/health"),
    ("http://127.0.0.1:8000/", "/v1/models", "http://127.0.0.1:8000/v1/models"),
    ("https://gw:443/", "healthz", "https://gw:443/healthz"),
])
def test_join_url(base, path, url):
    assert p.join_url(base, path) == url


def test_chat_request_and_bad_values():
    body = p.chat_request("tiny", "hi", 8)
    assert body["messages"] == [{"role": "user", "content": "hi"}] and body["max_tokens"] == 8 and body["stream"] is False
    for args in (("tiny", "", 8), ("tiny", "hi", 0)):
        with pytest.raises(p.ProbeError):
            p.chat_request(*args)


@pytest.mark.parametrize("body, ids", [
    ({"object": "list", "data": [{"id": "tiny", "object": "model"}]}, ["tiny"]),
    (b'{"data": [{"id": "a"}, {"id": "b"}, {"x": 1}]}', ["a", "b"]),
    ('{"data": []}', []),
])
def test_parse_models(body, ids):
    assert p.parse_models(body) == ids


@pytest.mark.parametrize("body", ["not json", '{"error": "no"}', "[]"])
def test_parse_models_rejects(body):
    with pytest.raises(p.ProbeError) as err:
        p.parse_models(body)
    assert err.value.stage == "models"


@pytest.mark.parametrize("message, content, reasoning", [
    ({"content": "A.", "reasoning": "R."}, "A.", "R."),
    ({"content": "A.", "reasoning_content": "R."}, "A.", "R."),
    ({"content": None, "reasoning": "only thinking"}, "", "only thinking"),
    ({"content": "A."}, "A.", ""),
])
def test_parse_chat_variants(message, content, reasoning):
    doc = {"model": "tiny", "choices": [{"message": message, "finish_reason": "length"}]}
    out = p.parse_chat(json.dumps(doc))
    assert (out["content"], out["reasoning"], out["finish_reason"]) == (content, reasoning, "length")


@pytest.mark.parametrize("body, fragment", [
    ({"error": {"message": "model not found"}}, "model not found"),
    ({"choices": []}, "no choices"),
    ({"choices": [{"message": {"content": "", "reasoning": None}}]}, "empty"),
    ("<html>", "not JSON"),
])
def test_parse_chat_rejects(body, fragment):
    with pytest.raises(p.ProbeError) as err:
        p.parse_chat(body if isinstance(body, str) else json.dumps(body))
    assert fragment in str(err.value) and err.value.stage == "chat"


@pytest.mark.parametrize("text, gave_up", [
    ("LoadState=loaded\nActiveState=active\nSubState=running\nNRestarts=0\nResult=success\n", None),
    ("LoadState=loaded\nActiveState=activating\nSubState=auto-restart\nNRestarts=2\nResult=exit-code\n", None),
    ("LoadState=loaded\nActiveState=failed\nSubState=failed\nNRestarts=5\nResult=start-limit-hit\n", "start-limit-hit"),
    ("LoadState=loaded\nActiveState=inactive\nSubState=dead\nNRestarts=0\nResult=success\n", "not running"),
    ("LoadState=not-found\nActiveState=active\nSubState=running\n", "does not exist"),
])
def test_unit_gave_up(text, gave_up):
    verdict = p.unit_gave_up(p.parse_unit(text))
    if gave_up is None:
        assert verdict is None
    else:
        assert gave_up in verdict


def test_parse_unit_restarts():
    assert p.parse_unit("NRestarts=3\n")["NRestarts"] == 3
    assert p.parse_unit("NRestarts=\n")["NRestarts"] is None


def test_summarize():
    line = p.summarize({"model": "tiny", "seconds": 1.234, "finish_reason": "stop", "content": "Up.\n"})
    assert line == "tiny answered in 1.2 s (finish stop): 'Up.'"


class FakeVllm(BaseHTTPRequestHandler):
    """vLLM's behaviour: /health open (503 while loading), /v1 needs the key."""

    not_ready = 0
    seen = []

    def log_message(self, *args):
        pass

    def _send(self, code, doc):
        data = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            if FakeVllm.not_ready > 0:
                FakeVllm.not_ready -= 1
                return self._send(503, {})
            return self._send(200, {})
        if self.headers.get("Authorization") != "Bearer " + KEY:
            return self._send(401, {"error": "Unauthorized"})
        if self.path == "/v1/models":
            return self._send(200, {"object": "list", "data": [{"id": "tiny"}]})
        return self._send(404, {})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeVllm.seen.append(body)
        if self.headers.get("Authorization") != "Bearer " + KEY:
            return self._send(401, {"error": "Unauthorized"})
        return self._send(200, CHAT)


@pytest.fixture
def fake_vllm():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeVllm)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeVllm.not_ready, FakeVllm.seen = 0, []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run_probe(args, capsys, check_mode=False):
    from ansible.module_utils.testing import patch_module_args

    sys.modules["ansible.module_utils.llm_probe"] = p
    spec = importlib.util.spec_from_file_location("llm_probe_module", LIBRARY / "llm_probe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with patch_module_args(dict(args, _ansible_check_mode=check_mode)), pytest.raises(SystemExit):
        mod.main()
    return json.loads(capsys.readouterr().out)


def test_probe_waits_for_health_then_completes(fake_vllm, capsys):
    FakeVllm.not_ready = 2
    res = run_probe({"base_url": fake_vllm, "api_key": KEY, "model": "tiny", "interval": 1, "timeout": 30,
                     "max_tokens": 16}, capsys)
    assert res.get("failed") is not True, res
    assert res["models"] == ["tiny"] and res["seconds_to_health"] >= 2
    assert res["completion"]["content"] == "The service is up." and res["completion"]["finish_reason"] == "stop"
    assert res["completion"]["reasoning"].startswith("The user")
    assert FakeVllm.seen[0]["max_tokens"] == 16 and FakeVllm.seen[0]["model"] == "tiny"
    assert KEY not in json.dumps(res)


@pytest.mark.parametrize("args, stage, fragment", [
    ({"api_key": "wrong" * 8}, "models", "401"),
    ({"model": "other"}, "models", "not other"),
    ({"health_path": "/nope", "timeout": 2}, "health", "did not answer 200"),
])
def test_probe_failures_name_the_stage(fake_vllm, capsys, args, stage, fragment):
    base = {"base_url": fake_vllm, "api_key": KEY, "model": "tiny", "interval": 1, "timeout": 30}
    res = run_probe(dict(base, **args), capsys)
    assert res["failed"] is True and res["stage"] == stage and fragment in res["msg"]


def test_probe_unreachable_times_out(capsys):
    res = run_probe({"base_url": "http://127.0.0.1:9", "api_key": KEY, "model": "tiny", "interval": 1, "timeout": 2}, capsys)
    assert res["failed"] is True and res["stage"] == "health"


def test_probe_skips_in_check_mode(capsys):
    res = run_probe({"base_url": "http://127.0.0.1:9", "api_key": KEY, "model": "tiny"}, capsys, check_mode=True)
    assert res["changed"] is False and res["skipped"] is True
