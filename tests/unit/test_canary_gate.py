"""Tests for module_utils/canary_gate.py (the canary gate's logic) and bin/llm-onprem-canary-gate.

The script runs as a program (a fresh interpreter) against a fake Prometheus: an http.server
in a thread of the test process that answers /api/v1/query with canned JSON for exactly the
queries promql() builds.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from canary_gate import (
    GateConfig,
    GateError,
    build_record,
    decide,
    eval_gate,
    evaluate_check,
    new_state,
    parse_query_result,
    promql,
    render_metrics,
    score_eval,
    score_eval_results,
    validate_runner_config,
)
from conftest import REPO_ROOT

NAN, INF = float("nan"), float("inf")
SCRIPT = REPO_ROOT / "bin" / "llm-onprem-canary-gate"
RULES = REPO_ROOT / "roles" / "monitoring" / "templates" / "etc" / "prometheus" / "rules" / "llm-onprem.rules.yml.j2"
DASHBOARD = REPO_ROOT / "roles" / "monitoring" / "files" / "dashboards" / "vllm.json"

CFG = {
    "interval_seconds": 60,
    "soak_seconds": 600,
    "min_requests": 20,
    "max_error_rate_increase": 0.01,
    "max_ttft_p99_ratio": 1.5,
    "max_e2e_p99_ratio": 1.5,
    "max_error_rate": 0.05,
    "max_ttft_p99_seconds": 2.0,
    "max_e2e_p99_seconds": 30.0,
    "failure_threshold": 3,
}
T0 = 1_700_000_000.0
HEALTHY = {"up": 1.0, "requests": 100.0, "errors": 0.0, "ttft_p99": 0.2, "e2e_p99": 2.0}


def sample(candidate=None, stable=None, **extra):
    return {"stable": dict(HEALTHY, **(stable or {})), "candidate": dict(HEALTHY, **(candidate or {})), **extra}


def state(**kw):
    st = new_state(T0, "screen", "screen-canary")
    st.update(kw)
    return st


# --------------------------------------------------------------------------- the decision table

# (id, config overrides, state overrides, sample, seconds since start,
#  decision, last_result, consecutive_failures after, reason pattern)
DECISION_TABLE = [
    ("pass-soaking", {}, {}, sample(), 60, "continue", "pass", 0, r"soaking: 60 s of 600 s"),
    ("inconclusive-few-candidate-requests", {}, {"consecutive_failures": 1}, sample({"requests": 5.0}), 60,
     "continue", "inconclusive", 1, r"candidate served 5 requests.*min_requests \(20\)"),
    ("inconclusive-few-stable-requests", {}, {}, sample(stable={"requests": 3.0}), 60,
     "continue", "inconclusive", 0, r"stable served 3 requests"),
    ("inconclusive-candidate-has-no-series", {}, {}, sample({"requests": None, "up": None}), 60,
     "continue", "inconclusive", 0, r"candidate requests in the window are missing"),
    ("one-failure-below-threshold", {}, {}, sample({"ttft_p99": 0.4}), 60,
     "continue", "fail", 1, r"2x stable's 0.2 s \(limit 1.5x\)"),
    ("error-rate-increase-is-soft", {"max_error_rate": None}, {"consecutive_failures": 1}, sample({"errors": 3.0}), 120,
     "continue", "fail", 2, r"error rate 0.03 exceeds stable's 0 by more than 0.01"),
    ("error-rate-increase-at-limit-passes", {}, {}, sample({"errors": 2.0}, {"errors": 1.0}), 60,
     "continue", "pass", 0, r"soaking"),
    ("threshold-reached", {}, {"consecutive_failures": 2}, sample({"e2e_p99": 4.0}), 180,
     "rollback", "fail", 3, r"3 consecutive failed checks reached failure_threshold \(3\)"),
    ("candidate-down-is-a-soft-failure", {}, {}, sample({"up": 0.0, "requests": None}), 60,
     "continue", "fail", 1, r"candidate is down"),
    ("candidate-down-at-threshold", {}, {"consecutive_failures": 2}, sample({"up": 0.0}), 60,
     "rollback", "fail", 3, r"reached failure_threshold"),
    ("absolute-e2e-breach-rolls-back-at-once", {}, {}, sample({"e2e_p99": 45.0}, {"e2e_p99": 40.0}), 60,
     "rollback", "fail", 1, r"hard breach.*|candidate P99 end-to-end latency 45 above its absolute limit 30"),
    ("absolute-error-rate-breach", {}, {}, sample({"errors": 10.0}), 60,
     "rollback", "fail", 1, r"candidate error rate 0.1 above its absolute limit 0.05"),
    ("absolute-breach-counted-when-not-immediate", {"rollback_on_absolute_breach": False}, {},
     sample({"e2e_p99": 45.0}, {"e2e_p99": 40.0}), 60, "continue", "fail", 1, r"above its absolute limit 30"),
    ("absolute-breach-needs-min-requests", {}, {}, sample({"e2e_p99": 45.0, "requests": 4.0}), 60,
     "continue", "inconclusive", 0, r"fewer than min_requests"),
    ("soak-not-reached", {}, {"passes": 8, "checks": 8}, sample(), 599, "continue", "pass", 0, r"soaking: 599 s"),
    ("soak-reached-promotes", {}, {"passes": 9, "checks": 9}, sample(), 600, "promote", "pass", 0,
     r"soak of 600 s elapsed \(600 s\) with 10 passing checks"),
    ("soak-reached-first-pass-promotes", {}, {"inconclusive": 9, "checks": 9}, sample(), 900, "promote", "pass", 0,
     r"with 1 passing checks"),
    ("soak-reached-last-inconclusive-waits", {}, {"passes": 9, "checks": 9}, sample({"requests": 1.0}), 700,
     "continue", "inconclusive", 0, r"soak elapsed but the last check did not pass"),
    ("soak-reached-never-passed-waits", {}, {"inconclusive": 9, "checks": 9}, sample({"ttft_p99": NAN}), 700,
     "continue", "inconclusive", 0, r"soak elapsed but no check has passed yet"),
    ("soak-reached-failing-does-not-promote", {}, {"passes": 9, "checks": 9}, sample({"ttft_p99": 1.0}), 700,
     "continue", "fail", 1, r"soak elapsed but the last check did not pass"),
    ("recovery-resets-failures", {}, {"consecutive_failures": 2, "failures": 2, "checks": 2}, sample(), 180,
     "continue", "pass", 0, r"0/3 consecutive failures"),
    ("nan-candidate-ttft-is-inconclusive", {"max_ttft_p99_seconds": None}, {"consecutive_failures": 1},
     sample({"ttft_p99": NAN}), 60, "continue", "inconclusive", 1, r"time to first token ratio not computable \(candidate NaN"),
    ("nan-stable-latency-is-inconclusive", {}, {}, sample(stable={"e2e_p99": NAN}), 60,
     "continue", "inconclusive", 0, r"end-to-end latency ratio not computable \(candidate 2, stable NaN\)"),
    ("nan-with-absolute-limit-not-judged", {}, {}, sample({"ttft_p99": NAN}), 60,
     "continue", "inconclusive", 0, r"candidate P99 time to first token is NaN: absolute limit 2.0 not judged"),
    ("nan-requests-is-inconclusive", {}, {}, sample({"requests": NAN}), 60,
     "continue", "inconclusive", 0, r"candidate requests in the window are NaN"),
    ("inf-p99-breaches-absolute-limit", {}, {}, sample({"e2e_p99": INF}), 60,
     "rollback", "fail", 1, r"\+Inf above its absolute limit 30"),
    ("inf-p99-fails-ratio-without-limit", {"max_e2e_p99_seconds": None}, {}, sample({"e2e_p99": INF}), 60,
     "continue", "fail", 1, r"is \+Infx stable's"),
    ("zero-stable-latency-is-inconclusive", {}, {}, sample(stable={"ttft_p99": 0.0}), 60,
     "continue", "inconclusive", 0, r"ratio not computable"),
    ("missing-error-series-is-inconclusive", {}, {}, sample({"errors": None}), 60,
     "continue", "inconclusive", 0, r"error rate is missing|error rate not computable"),
    ("failure-beats-inconclusive", {}, {}, sample({"ttft_p99": 0.5, "e2e_p99": NAN}), 60,
     "continue", "fail", 1, r"time to first token 0.5 s is 2.5x"),
    ("eval-below-margin-fails", {"eval_min_agreement_margin": 0.05}, {},
     sample(eval={"stable_ratio": 0.9, "candidate_ratio": 0.8}), 60,
     "continue", "fail", 1, r"evaluation agreement 0.8 more than 0.05 below stable's 0.9"),
    ("eval-within-margin-passes", {"eval_min_agreement_margin": 0.1}, {},
     sample(eval={"stable_ratio": 0.9, "candidate_ratio": 0.8}), 60, "continue", "pass", 0, r"soaking"),
    ("eval-not-scored-is-inconclusive", {"eval_min_agreement_margin": 0.1}, {}, sample(eval=None), 60,
     "continue", "inconclusive", 0, r"evaluation set not scored"),
]


@pytest.mark.parametrize(("case_id", "cfg", "st", "smp", "elapsed", "decision", "result", "failures", "reason"),
                         DECISION_TABLE, ids=[c[0] for c in DECISION_TABLE])
def test_decision_table(case_id, cfg, st, smp, elapsed, decision, result, failures, reason):
    before = state(**st)
    frozen = json.dumps(before, sort_keys=True)
    got, after, reasons = decide(dict(CFG, **cfg), before, smp, T0 + elapsed)
    assert (got, after["last_result"], after["consecutive_failures"]) == (decision, result, failures), reasons
    assert any(re.search(reason, r) for r in reasons), reasons
    assert after["decision"] == decision and after["checks"] == before["checks"] + 1
    assert after[{"pass": "passes", "fail": "failures", "inconclusive": "inconclusive"}[result]] == \
        before[{"pass": "passes", "fail": "failures", "inconclusive": "inconclusive"}[result]] + 1
    assert (after["decided_at"] is not None) == (decision != "continue")
    assert json.dumps(before, sort_keys=True) == frozen, "decide() must not change its input state"


def test_first_check_starts_the_soak():
    decision, st, _ = decide(CFG, None, sample(), T0)
    assert decision == "continue" and st["started_at"] == T0 and st["checks"] == 1 and st["passes"] == 1


@pytest.mark.parametrize("final", ["rollback", "promote"])
def test_final_decision_sticks(final):
    st = state(decision=final, decided_at=T0 + 60, checks=4)
    decision, after, reasons = decide(CFG, st, sample({"e2e_p99": 99.0}), T0 + 120)
    assert decision == final and after == st and reasons[0].startswith(f"already decided: {final}")


def test_a_bad_candidate_sequence_rolls_back_after_threshold():
    st, seen = None, []
    for minute, smp in enumerate([sample(), sample({"ttft_p99": 0.5}), sample({"requests": 2.0}),
                                  sample({"ttft_p99": 0.5}), sample({"ttft_p99": 0.5})]):
        decision, st, _ = decide(CFG, st, smp, T0 + 60 * minute)
        seen.append((decision, st["consecutive_failures"]))
    assert seen == [("continue", 0), ("continue", 1), ("continue", 1), ("continue", 2), ("rollback", 3)]


def test_evaluate_check_hard_flag():
    assert evaluate_check(CFG, sample({"e2e_p99": 31.0}, {"e2e_p99": 30.0}))[:2] == ("fail", True)
    assert evaluate_check(dict(CFG, rollback_on_absolute_breach=False), sample({"e2e_p99": 31.0}, {"e2e_p99": 30.0}))[:2] == \
        ("fail", False)
    assert evaluate_check(CFG, sample({"ttft_p99": 1.0}))[:2] == ("fail", False)
    assert evaluate_check(CFG, {})[0] == "inconclusive"


@pytest.mark.parametrize(("bad_state", "field"), [
    ({"version": 2}, "state.version"),
    ({"started_at": "yesterday"}, "state.started_at"),
    ({"consecutive_failures": -1}, "state.consecutive_failures"),
    ({"decision": "abort"}, "state.decision"),
    ({"last_result": "ok"}, "state.last_result"),
])
def test_decide_rejects_a_foreign_state(bad_state, field):
    with pytest.raises(GateError) as err:
        decide(CFG, state(**bad_state), sample(), T0)
    assert err.value.field == field


def test_decide_rejects_nan_now():
    with pytest.raises(GateError, match="now"):
        decide(CFG, None, sample(), NAN)


# --------------------------------------------------------------------------- configuration


def test_defaults():
    cfg = GateConfig.from_dict({})
    assert (cfg.interval_seconds, cfg.soak_seconds, cfg.min_requests, cfg.failure_threshold) == (60, 172800, 20, 5)
    assert (cfg.max_error_rate_increase, cfg.max_ttft_p99_ratio, cfg.max_e2e_p99_ratio) == (0.01, 1.5, 1.5)
    assert cfg.max_error_rate is None and cfg.eval_min_agreement_margin is None and cfg.rollback_on_absolute_breach
    assert cfg.window_seconds == 300
    assert GateConfig.from_dict({"interval_seconds": 600, "soak_seconds": 3600}).window_seconds == 600
    assert GateConfig.from_dict({"query_window_seconds": 120}).window_seconds == 120
    assert GateConfig.from_dict({"interval_seconds": 60.0}).interval_seconds == 60
    assert json.loads(json.dumps(GateConfig.from_dict(CFG).to_dict()))["failure_threshold"] == 3


@pytest.mark.parametrize(("doc", "field", "message"), [
    ({"max_ttft_ratio": 2}, "max_ttft_ratio", "is not a gate setting"),
    ({"interval_seconds": 0}, "interval_seconds", "between 1 and 86400"),
    ({"interval_seconds": "60"}, "interval_seconds", "must be a number"),
    ({"interval_seconds": True}, "interval_seconds", "must be a number"),
    ({"interval_seconds": 1.5}, "interval_seconds", "whole number"),
    ({"interval_seconds": None}, "interval_seconds", "must be set"),
    ({"min_requests": 0}, "min_requests", "between 1"),
    ({"max_error_rate_increase": NAN}, "max_error_rate_increase", "finite"),
    ({"max_error_rate_increase": 1.5}, "max_error_rate_increase", "between 0.0 and 1.0"),
    ({"max_ttft_p99_ratio": 0.9}, "max_ttft_p99_ratio", "between 1.0"),
    ({"max_e2e_p99_ratio": INF}, "max_e2e_p99_ratio", "finite"),
    ({"max_error_rate": -0.1}, "max_error_rate", "between 0.0"),
    ({"max_ttft_p99_seconds": 0}, "max_ttft_p99_seconds", "between 0.001"),
    ({"failure_threshold": 0}, "failure_threshold", "between 1"),
    ({"failure_threshold": 2.5}, "failure_threshold", "whole number"),
    ({"rollback_on_absolute_breach": "yes"}, "rollback_on_absolute_breach", "true or false"),
    ({"eval_min_agreement_margin": 2}, "eval_min_agreement_margin", "between 0.0 and 1.0"),
    ({"error_finished_reasons": []}, "error_finished_reasons", "non-empty list"),
    ({"error_finished_reasons": ["error\"}"]}, "error_finished_reasons", "finished_reason"),
    ({"query_window_seconds": 10}, "query_window_seconds", "between 30"),
    ({"soak_seconds": 30, "interval_seconds": 60}, "soak_seconds", "at least interval_seconds"),
])
def test_config_errors_name_the_field(doc, field, message):
    with pytest.raises(GateError) as err:
        GateConfig.from_dict(doc)
    assert err.value.field == field and message in str(err.value) and str(err.value).startswith(field + ":")


def test_config_must_be_a_mapping():
    with pytest.raises(GateError, match="^gate: must be a mapping"):
        GateConfig.from_dict([1])


# --------------------------------------------------------------------------- PromQL


def test_promql_exact():
    q = promql("screen", "screen-canary", "5m")
    assert set(q) == {"stable", "candidate"} and set(q["candidate"]) == {"up", "requests", "errors", "ttft_p99", "e2e_p99"}
    sel = 'job="vllm",llm_instance="screen-canary"'
    assert q["candidate"] == {
        "up": f"max(up{{{sel}}})",
        "requests": f"sum(increase(vllm:request_success_total{{{sel}}}[5m]))",
        "errors": f'sum(increase(vllm:request_success_total{{{sel},finished_reason=~"error"}}[5m])) or vector(0)',
        "ttft_p99": f"histogram_quantile(0.99, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{{{sel}}}[5m])))",
        "e2e_p99": f"histogram_quantile(0.99, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket{{{sel}}}[5m])))",
    }
    assert q["stable"]["up"] == 'max(up{job="vllm",llm_instance="screen"})'


def test_promql_window_seconds_and_reasons():
    q = promql("a", "b", 300, ("error", "abort"))
    assert "[300s]" in q["stable"]["requests"] and 'finished_reason=~"error|abort"' in q["stable"]["errors"]


def test_promql_metric_names_are_the_monitoring_roles():
    """The gate reads the names the monitoring rules and dashboard already use (vLLM V1's)."""
    known = RULES.read_text() + DASHBOARD.read_text()
    names = {n for exprs in promql("a", "b", "5m").values() for e in exprs.values()
             for n in re.findall(r"vllm:[a-z0-9_]+", e)}
    assert names == {"vllm:request_success_total", "vllm:time_to_first_token_seconds_bucket",
                     "vllm:e2e_request_latency_seconds_bucket"}
    for name in names:
        assert name in known, name
    assert 'job_name: vllm\n' in (REPO_ROOT / "roles/monitoring/templates/etc/prometheus/prometheus.yml.j2").read_text()


@pytest.mark.parametrize(("args", "field"), [
    (("screen", "screen", "5m"), "candidate_instance"),
    (('a"} or up{', "b", "5m"), "stable_instance"),
    (("a", "B", "5m"), "candidate_instance"),
    (("a", "b", "5 minutes"), "window"),
    (("a", "b", True), "window"),
    (("a", "b", "5m", ("err|or}",)), "error_finished_reasons"),
])
def test_promql_rejects(args, field):
    with pytest.raises(GateError) as err:
        promql(*args)
    assert err.value.field == field


def _vector(*values):
    return {"status": "success", "data": {"resultType": "vector",
                                          "result": [{"metric": {}, "value": [T0, v]} for v in values]}}


@pytest.mark.parametrize(("payload", "expected"), [
    (_vector("1.5"), 1.5),
    (_vector("0"), 0.0),
    (_vector("+Inf"), INF),
    (_vector(), None),
    ({"status": "success", "data": {"resultType": "scalar", "result": [T0, "3"]}}, 3.0),
])
def test_parse_query_result(payload, expected):
    assert parse_query_result(payload) == expected


def test_parse_query_result_nan():
    assert math.isnan(parse_query_result(_vector("NaN")))


@pytest.mark.parametrize(("payload", "message"), [
    ({"status": "error", "errorType": "bad_data", "error": "parse error"}, "bad_data: parse error"),
    (_vector("1", "2"), "2 series"),
    ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "unexpected resultType"),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1]}]}}, "cannot read"),
    ([], "not a JSON object"),
])
def test_parse_query_result_errors(payload, message):
    with pytest.raises(GateError, match=message):
        parse_query_result(payload)


# --------------------------------------------------------------------------- evaluation set

ITEMS = [
    {"prompt": "Capital of France?", "expected": "Paris"},
    {"prompt": "2+2?", "expected": "4"},
    {"prompt": "Colour of the sky?", "expected": ["blue", "Light  Blue"]},
    {"prompt": "Largest planet?", "expected": "Jupiter"},
]


@pytest.mark.parametrize(("rule", "answers", "ratio"), [
    ("exact", ["Paris", "4", "blue", "Jupiter"], 1.0),
    ("exact", ["  PARIS\n", "4", "light blue", "jupiter"], 1.0),
    ("exact", ["Paris.", "four", "blue", "Saturn"], 0.25),
    ("exact", ["It is Paris", "4", "blue", None], 0.5),
    ("contains", ["It is Paris", "The answer is 4.", "LIGHT\tBLUE sky", "Saturn"], 0.75),
    ("contains", [None, None, None, None], 0.0),
    ("contains", ["paris", "", "  ", "Jupiter!"], 0.5),
])
def test_score_eval(rule, answers, ratio):
    assert score_eval(ITEMS, answers, rule) == ratio


@pytest.mark.parametrize(("items", "answers", "rule", "field"), [
    (ITEMS, ["a"] * 4, "regex", "rule"),
    ([], [], "exact", "items"),
    (ITEMS, ["a"] * 3, "exact", "answers"),
    ([{"expected": "x"}], ["x"], "exact", "items[0]"),
    ([{"prompt": "p", "expected": ""}], ["x"], "exact", "items[0].expected"),
    ([{"prompt": "p", "expected": []}], ["x"], "exact", "items[0].expected"),
])
def test_score_eval_errors(items, answers, rule, field):
    with pytest.raises(GateError) as err:
        score_eval(items, answers, rule)
    assert err.value.field == field


@pytest.mark.parametrize(("stable", "candidate", "margin", "ok"), [
    (0.9, 0.9, 0.0, True),
    (0.9, 0.95, 0.0, True),
    (0.9, 0.85, 0.05, True),
    (0.7, 0.6, 0.1, True),  # 0.7 - 0.1 is 0.6 only up to float rounding
    (0.9, 0.84, 0.05, False),
    (1.0, 0.0, 1.0, True),
    (0.5, 0.49, 0.0, False),
])
def test_eval_gate(stable, candidate, margin, ok):
    assert eval_gate(stable, candidate, margin) is ok


@pytest.mark.parametrize(("args", "field"), [((1.2, 0.5, 0.1), "stable_ratio"), ((0.5, NAN, 0.1), "candidate_ratio"),
                                             ((0.5, 0.5, -0.1), "margin"), ((0.5, None, 0.1), "candidate_ratio")])
def test_eval_gate_errors(args, field):
    with pytest.raises(GateError) as err:
        eval_gate(*args)
    assert err.value.field == field


def test_score_eval_results():
    doc = {"rule": "contains", "items": ITEMS, "stable_answers": ["Paris", "4", "blue", "Jupiter"],
           "candidate_answers": ["Paris", "5", "blue", None]}
    assert score_eval_results(doc) == {"rule": "contains", "items": 4, "stable_ratio": 1.0, "candidate_ratio": 0.5}


# --------------------------------------------------------------------------- record


def test_build_record_is_json_and_complete():
    smp = sample({"e2e_p99": INF, "ttft_p99": NAN, "errors": 10.0})
    decision, st, reasons = decide(CFG, state(), smp, T0 + 60)
    rec = build_record(CFG, st, smp, decision, reasons, T0 + 60, "screen", "screen-canary", "rev-2",
                       "https://127.0.0.1:9090")
    text = json.dumps(rec, allow_nan=False)
    back = json.loads(text)
    assert back["decision"] == "rollback" and back["time"] == "2023-11-14T22:14:20Z"
    assert back["metrics"]["candidate"]["e2e_p99"] == "+Inf" and back["metrics"]["candidate"]["ttft_p99"] == "NaN"
    assert back["metrics"]["candidate"]["error_rate"] == 0.1 and back["metrics"]["stable"]["error_rate"] == 0.0
    assert back["reasons"] == reasons and back["state"]["consecutive_failures"] == 1
    assert back["config"]["max_e2e_p99_seconds"] == 30.0 and back["canary_id"] == "rev-2"
    assert back["candidate_instance"] == "screen-canary" and back["started"] == "2023-11-14T22:13:20Z"
    assert "bearer" not in text.lower() and "token_file" not in text


def test_render_metrics():
    text = render_metrics(state(decision="rollback", consecutive_failures=3, last_check_at=T0), "a", "b")
    assert 'llm_onprem_canary_decision{stable="a",candidate="b",decision="rollback"} 1' in text
    assert 'llm_onprem_canary_decision{stable="a",candidate="b",decision="continue"} 0' in text
    assert 'llm_onprem_canary_consecutive_failures{stable="a",candidate="b"} 3' in text


# --------------------------------------------------------------------------- runner config


def runner_doc(tmp_path, **over):
    doc = {
        "stable_instance": "screen",
        "candidate_instance": "screen-canary",
        "gate": dict(CFG),
        "prometheus": {"url": "http://127.0.0.1:9/"},
        "state_file": str(tmp_path / "state" / "state.json"),
        "record_dir": str(tmp_path / "records"),
        "rollback_command": ["/usr/local/sbin/llm-onprem-canary-rollback", "screen-canary"],
    }
    doc.update(over)
    return doc


def test_runner_config_valid(tmp_path):
    cfg = validate_runner_config(runner_doc(tmp_path))
    assert cfg["prometheus"]["url"] == "http://127.0.0.1:9" and cfg["prometheus"]["timeout_seconds"] == 10.0
    assert isinstance(cfg["gate"], GateConfig) and cfg["promote_command"] is None and cfg["action_timeout_seconds"] == 600


@pytest.mark.parametrize(("over", "field", "message"), [
    ({"rollback_command": "/usr/local/sbin/rollback screen"}, "rollback_command", "argv list"),
    ({"rollback_command": ["rollback.sh"]}, "rollback_command", "absolute path"),
    ({"promote_command": []}, "promote_command", "argv list"),
    ({"prometheus": {"url": "https://admin:secret@127.0.0.1:9090"}}, "prometheus.url", "must not carry credentials"),
    ({"prometheus": {"url": "127.0.0.1:9090"}}, "prometheus.url", "http(s) URL"),
    ({"prometheus": {"url": "http://p", "token": "x"}}, "prometheus.token", "is not a setting"),
    ({"prometheus": {"url": "http://p", "bearer_token_file": "key"}}, "prometheus.bearer_token_file", "absolute path"),
    ({"prometheus": {"url": "http://p", "timeout_seconds": 0}}, "prometheus.timeout_seconds", "between 0 and 300"),
    ({"state_file": "state.json"}, "state_file", "absolute path"),
    ({"candidate_instance": "screen"}, "candidate_instance", "must differ"),
    ({"stable_instance": "Screen"}, "stable_instance", "is not an instance name"),
    ({"canary_id": "rev 2"}, "canary_id", "short token"),
    ({"soak": 60}, "soak", "is not a setting"),
    ({"gate": {"failure_threshold": 0}}, "failure_threshold", "between 1"),
    ({"gate": {"eval_min_agreement_margin": 0.05}}, "eval_results_file", "required when"),
    ({"action_timeout_seconds": -1}, "action_timeout_seconds", "between 0 and 3600"),
])
def test_runner_config_errors(tmp_path, over, field, message):
    with pytest.raises(GateError) as err:
        validate_runner_config(runner_doc(tmp_path, **over))
    assert err.value.field == field and message in str(err.value)


def test_runner_config_requires(tmp_path):
    doc = runner_doc(tmp_path)
    del doc["rollback_command"]
    with pytest.raises(GateError, match="^rollback_command: is required"):
        validate_runner_config(doc)


# --------------------------------------------------------------------------- the script end to end

KEY = "s3cr3t-canary-key-0123456789"


class FakePrometheus:
    """Answers /api/v1/query for the gate's own queries with the values in ``self.values``."""

    def __init__(self, window="300s"):
        self.queries = {}
        for side, exprs in promql("screen", "screen-canary", window).items():
            for key, expr in exprs.items():
                self.queries[expr] = (side, key)
        self.values = {"stable": dict(HEALTHY), "candidate": dict(HEALTHY)}
        self.auth = []
        self.error = None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                params = urllib.parse.parse_qs(url.query)
                fake.auth.append(self.headers.get("Authorization"))
                expr = params.get("query", [""])[0]
                if url.path != "/prom/api/v1/query" or expr not in fake.queries or fake.error:
                    body, code = {"status": "error", "errorType": "bad_data", "error": fake.error or f"unknown {expr}"}, 400
                else:
                    side, key = fake.queries[expr]
                    value = fake.values[side][key]
                    result = [] if value is None else [{"metric": {}, "value": [float(params["time"][0]), _prom(value)]}]
                    body, code = {"status": "success", "data": {"resultType": "vector", "result": result}}, 200
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/prom/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _prom(value):
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf"
    return repr(float(value))


@pytest.fixture
def prom():
    fake = FakePrometheus()
    yield fake
    fake.close()


ACTION = """import json, os, sys
marker, rc = sys.argv[1], int(sys.argv[2])
with open(marker, "a") as fh:
    fh.write(json.dumps({k: v for k, v in os.environ.items() if k.startswith("LLM_ONPREM_CANARY_")}) + "\\n")
print("action done", marker)
sys.exit(rc)
"""


@pytest.fixture
def site(tmp_path, prom):
    """A config file, key file and action scripts; returns (config path, config doc)."""
    key = tmp_path / "prometheus.key"
    key.write_text(KEY + "\n")
    key.chmod(0o600)
    action = tmp_path / "action.py"
    action.write_text(ACTION)
    (tmp_path / "state").mkdir()
    doc = runner_doc(
        tmp_path,
        prometheus={"url": prom.url, "bearer_token_file": str(key), "timeout_seconds": 5},
        rollback_command=[sys.executable, str(action), str(tmp_path / "rolled-back"), "0"],
        promote_command=[sys.executable, str(action), str(tmp_path / "promoted"), "0"],
        gate=dict(CFG, query_window_seconds=300),
        metrics_file=str(tmp_path / "state" / "canary.prom"),
    )
    path = tmp_path / "canary-gate.json"
    path.write_text(json.dumps(doc))
    return path, doc


def gate(config, *extra):
    p = subprocess.run([sys.executable, str(SCRIPT), "--config", str(config), *extra], capture_output=True, text=True,
                       timeout=60, check=False)
    assert KEY not in p.stdout + p.stderr
    return p.returncode, p.stdout, p.stderr


def read_json(path):
    return json.loads(path.read_text())


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def assert_no_secret_or_temp(tmp_path):
    for f in tmp_path.rglob("*"):
        if f.is_file() and f.name != "prometheus.key":
            assert KEY not in f.read_text(errors="replace"), f
    leftovers = [f.name for f in (tmp_path / "state").iterdir() if f.name.startswith(".")]
    assert leftovers == []


def test_script_is_executable_with_shebang():
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/usr/bin/env python3\n")


def test_script_healthy_check_continues(tmp_path, site, prom):
    config, doc = site
    rc, out, err = gate(config)
    assert rc == 0, out + err
    st = read_json(tmp_path / "state" / "state.json")
    assert (st["decision"], st["last_result"], st["checks"], st["passes"]) == ("continue", "pass", 1, 1)
    assert (st["stable_instance"], st["candidate_instance"]) == ("screen", "screen-canary")
    assert "check pass: decision continue" in out
    assert set(prom.auth) == {"Bearer " + KEY} and len(prom.auth) == 10
    assert 'decision="continue"} 1' in (tmp_path / "state" / "canary.prom").read_text()
    assert oct((tmp_path / "state" / "state.json").stat().st_mode & 0o777) == "0o640"
    assert not (tmp_path / "rolled-back").exists() and not (tmp_path / "records").exists()
    assert_no_secret_or_temp(tmp_path)


def test_script_rolls_back_on_hard_breach(tmp_path, site, prom):
    config, doc = site
    assert gate(config)[0] == 0
    prom.values["candidate"].update(e2e_p99=120.0)
    rc, out, err = gate(config)
    assert rc == 1, out + err
    calls = lines(tmp_path / "rolled-back")
    records = sorted((tmp_path / "records").iterdir())
    assert len(calls) == 1 and len(records) == 1
    assert calls[0]["LLM_ONPREM_CANARY_DECISION"] == "rollback"
    assert calls[0]["LLM_ONPREM_CANARY_CANDIDATE"] == "screen-canary"
    assert calls[0]["LLM_ONPREM_CANARY_RECORD"] == str(records[0])
    rec = read_json(records[0])
    assert rec["decision"] == "rollback" and rec["metrics"]["candidate"]["e2e_p99"] == 120.0
    assert any("above its absolute limit 30" in r for r in rec["reasons"])
    assert re.match(r"canary-screen-canary-\d{8}T\d{6}Z-rollback\.json$", records[0].name)
    st = read_json(tmp_path / "state" / "state.json")
    assert (st["decision"], st["action_done"], st["action_attempts"], st["checks"]) == ("rollback", True, 1, 2)
    assert "action done" in out and "hard breach" in out
    # Later runs of the timer do nothing more.
    prom.values["candidate"].update(e2e_p99=1.0)
    rc, out, _ = gate(config)
    assert rc == 0 and "already decided: rollback" in out
    assert len(lines(tmp_path / "rolled-back")) == 1 and read_json(tmp_path / "state" / "state.json") == st
    assert 'decision="rollback"} 1' in (tmp_path / "state" / "canary.prom").read_text()
    assert_no_secret_or_temp(tmp_path)


def test_script_rolls_back_at_failure_threshold(tmp_path, site, prom):
    config, doc = site
    doc["gate"]["failure_threshold"] = 2
    config.write_text(json.dumps(doc))
    prom.values["candidate"].update(ttft_p99=0.5)
    assert gate(config)[0] == 0
    assert read_json(tmp_path / "state" / "state.json")["consecutive_failures"] == 1
    assert not (tmp_path / "rolled-back").exists()
    rc, out, _ = gate(config)
    assert rc == 1 and "2 consecutive failed checks reached failure_threshold (2)" in out
    assert len(lines(tmp_path / "rolled-back")) == 1


def test_script_inconclusive_keeps_failures(tmp_path, site, prom):
    config, _ = site
    prom.values["candidate"].update(ttft_p99=0.5)
    gate(config)
    prom.values["candidate"].update(requests=None, ttft_p99=NAN, e2e_p99=NAN)
    assert gate(config)[0] == 0
    st = read_json(tmp_path / "state" / "state.json")
    assert (st["last_result"], st["consecutive_failures"], st["inconclusive"]) == ("inconclusive", 1, 1)


def test_script_promotes_after_soak(tmp_path, site, prom):
    config, doc = site
    old = new_state(time.time() - 700, "screen", "screen-canary")
    (tmp_path / "state" / "state.json").write_text(json.dumps(old))
    rc, out, err = gate(config)
    assert rc == 0, out + err
    assert len(lines(tmp_path / "promoted")) == 1 and not (tmp_path / "rolled-back").exists()
    st = read_json(tmp_path / "state" / "state.json")
    assert (st["decision"], st["action_done"]) == ("promote", True)
    rec = read_json(next((tmp_path / "records").iterdir()))
    assert rec["decision"] == "promote" and rec["reasons"][0].startswith("soak of 600 s elapsed")


def test_script_promote_without_command(tmp_path, site, prom):
    config, doc = site
    del doc["promote_command"]
    config.write_text(json.dumps(doc))
    (tmp_path / "state" / "state.json").write_text(json.dumps(new_state(time.time() - 700, "screen", "screen-canary")))
    rc, out, _ = gate(config)
    assert rc == 0 and "run playbooks/promote.yml" in out
    assert read_json(tmp_path / "state" / "state.json")["decision"] == "promote"


def test_script_failed_rollback_command_is_retried(tmp_path, site, prom):
    config, doc = site
    good = list(doc["rollback_command"])
    doc["rollback_command"][-1] = "3"
    config.write_text(json.dumps(doc))
    prom.values["candidate"].update(errors=50.0)
    rc, out, _ = gate(config)
    assert rc == 4 and "exited with 3; the next run retries it" in out
    st = read_json(tmp_path / "state" / "state.json")
    assert (st["decision"], st["action_done"], st["action_attempts"]) == ("rollback", False, 1)
    doc["rollback_command"] = good
    config.write_text(json.dumps(doc))
    prom.error = "must not be queried again"
    rc, out, _ = gate(config)
    assert rc == 1 and "retrying" in out
    st = read_json(tmp_path / "state" / "state.json")
    assert (st["action_done"], st["action_attempts"], st["checks"]) == (True, 2, 1)
    assert len(lines(tmp_path / "rolled-back")) == 2 and len(list((tmp_path / "records").iterdir())) == 1


def test_script_missing_rollback_command(tmp_path, site, prom):
    config, doc = site
    doc["rollback_command"] = [str(tmp_path / "no-such-script")]
    config.write_text(json.dumps(doc))
    prom.values["candidate"].update(up=0.0)
    doc["gate"]["failure_threshold"] = 1
    config.write_text(json.dumps(doc))
    rc, out, _ = gate(config)
    assert rc == 4 and "cannot run" in out


def test_script_prometheus_unreachable_leaves_state(tmp_path, site, prom):
    config, doc = site
    assert gate(config)[0] == 0
    before = (tmp_path / "state" / "state.json").read_text()
    prom.close()
    rc, out, err = gate(config)
    assert rc == 3 and "no check taken: cannot reach Prometheus" in err
    assert (tmp_path / "state" / "state.json").read_text() == before


def test_script_prometheus_error_leaves_state(tmp_path, site, prom):
    config, _ = site
    prom.error = "query timed out"
    rc, _, err = gate(config)
    assert rc == 3 and "bad_data: query timed out" in err
    assert not (tmp_path / "state" / "state.json").exists()


def test_script_unreadable_state(tmp_path, site):
    config, _ = site
    (tmp_path / "state" / "state.json").write_text("{not json")
    rc, _, err = gate(config)
    assert rc == 3 and "cannot read the state file" in err


def test_script_key_file_readable_by_others(tmp_path, site):
    config, _ = site
    (tmp_path / "prometheus.key").chmod(0o644)
    rc, _, err = gate(config)
    assert rc == 2 and "readable by group or others (mode 0644): chmod 0600 it" in err


@pytest.mark.parametrize(("content", "message"), [(None, "cannot be read: No such file"), ("", "one key on one line"),
                                                  ("two words", "one key on one line")])
def test_script_key_file_unusable(tmp_path, site, content, message):
    config, _ = site
    key = tmp_path / "prometheus.key"
    if content is None:
        key.unlink()
    else:
        key.write_text(content)
    rc, _, err = gate(config)
    assert rc == 2 and message in err


@pytest.mark.parametrize(("content", "message"), [
    ("{", "config"), (json.dumps({"stable_instance": "a"}), "is required"),
])
def test_script_bad_config(tmp_path, content, message):
    config = tmp_path / "c.json"
    config.write_text(content)
    rc, _, err = gate(config)
    assert rc == 2 and message in err


def test_script_usage_error(tmp_path):
    rc, _, err = gate(tmp_path / "x.json", "--bogus")
    assert rc == 2 and "unrecognized arguments" in err


def test_script_dry_run_writes_nothing(tmp_path, site, prom):
    config, _ = site
    prom.values["candidate"].update(e2e_p99=120.0)
    rc, out, _ = gate(config, "--dry-run")
    assert rc == 0 and "decision rollback" in out
    assert sorted(f.name for f in (tmp_path / "state").iterdir()) == []
    assert not (tmp_path / "rolled-back").exists() and not (tmp_path / "records").exists()


def test_script_state_of_another_canary_starts_afresh(tmp_path, site, prom):
    config, doc = site
    old = new_state(time.time() - 9999, "screen", "screen-canary", "rev-1")
    old.update(decision="rollback", action_done=True)
    (tmp_path / "state" / "state.json").write_text(json.dumps(old))
    doc["canary_id"] = "rev-2"
    config.write_text(json.dumps(doc))
    rc, out, _ = gate(config)
    assert rc == 0 and "belongs to another canary" in out
    st = read_json(tmp_path / "state" / "state.json")
    assert (st["canary_id"], st["decision"], st["checks"]) == ("rev-2", "continue", 1)


def test_script_eval_results(tmp_path, site, prom):
    config, doc = site
    results = tmp_path / "eval.json"
    doc["gate"]["eval_min_agreement_margin"] = 0.1
    doc["eval_results_file"] = str(results)
    config.write_text(json.dumps(doc))
    rc, out, _ = gate(config)
    assert rc == 0 and "not there yet" in out
    assert read_json(tmp_path / "state" / "state.json")["last_result"] == "inconclusive"
    results.write_text(json.dumps({"rule": "exact", "items": ITEMS, "stable_answers": ["Paris", "4", "blue", "Jupiter"],
                                   "candidate_answers": ["Paris", "5", "blue", "Saturn"]}))
    rc, out, _ = gate(config)
    assert rc == 0 and "evaluation agreement 0.5 more than 0.1 below stable's 1" in out
    assert read_json(tmp_path / "state" / "state.json")["consecutive_failures"] == 1


def _load_script():
    loader = importlib.machinery.SourceFileLoader("canary_gate_script", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def test_write_atomic_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    script = _load_script()
    target = tmp_path / "state.json"
    script.write_atomic(str(target), "old\n", 0o640)
    assert target.read_text() == "old\n" and oct(target.stat().st_mode & 0o777) == "0o640"

    def boom(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(script.os, "replace", boom)
    with pytest.raises(OSError):
        script.write_atomic(str(target), "new\n", 0o640)
    assert target.read_text() == "old\n" and [f.name for f in tmp_path.iterdir()] == ["state.json"]


def test_lock_refuses_a_second_run(tmp_path):
    script = _load_script()
    held = script.lock(str(tmp_path / "state.json"))
    try:
        with pytest.raises(script.NoCheck, match="another run holds"):
            script.lock(str(tmp_path / "state.json"))
    finally:
        held.close()


def test_importable_as_ansible_module_utils():
    code = ("import ansible.module_utils as amu, sys; amu.__path__.append(sys.argv[1]); "
            "from ansible.module_utils.canary_gate import decide; print(decide.__module__)")
    out = subprocess.run([sys.executable, "-c", code, str(REPO_ROOT / "module_utils")], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "ansible.module_utils.canary_gate"


def test_script_runs_installed_beside_canary_gate(tmp_path, site, prom):
    """On the site the role installs canary_gate.py beside the script, with no module_utils/ above it."""
    config, _ = site
    lib = tmp_path / "lib" / "llm-onprem"
    lib.mkdir(parents=True)
    (lib / "llm-onprem-canary-gate").write_text(SCRIPT.read_text())
    (lib / "canary_gate.py").write_text((REPO_ROOT / "module_utils" / "canary_gate.py").read_text())
    p = subprocess.run([sys.executable, "-I", str(lib / "llm-onprem-canary-gate"), "--config", str(config)],
                       capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert read_json(tmp_path / "state" / "state.json")["checks"] == 1
