# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The canary gate: compare a candidate vLLM instance with the stable one and decide.

Plain functions, standard library only, no imports from the rest of module_utils: the file is
importable as ``ansible.module_utils.canary_gate`` (a module on a managed host), from
module_utils/ on sys.path (the unit tests, tests/unit/test_canary_gate.py) and from the
directory of bin/llm-onprem-canary-gate, beside which a role installs it on the site. The
script queries Prometheus, keeps the state file and runs the commands; everything it decides
is decided here. Design, decision table and defaults: docs/canary.md.

One check = one sample of the metrics over ``query_window_seconds``. Its result is
``pass``, ``fail`` or ``inconclusive`` (too few requests, a metric missing or NaN):

* fail always wins over inconclusive, inconclusive over pass;
* a **hard** failure (the candidate breaches one of its absolute limits with at least
  ``min_requests`` requests) rolls back at once when ``rollback_on_absolute_breach`` is true;
* a soft failure (worse than stable by more than the allowed increase or ratio, the candidate
  not scraped, the evaluation set below the margin) adds one to the consecutive failures; a
  pass resets them to 0; an inconclusive check leaves them as they are;
* ``failure_threshold`` consecutive failures roll back (Flagger's ``threshold``);
* after ``soak_seconds`` since the canary started, with at least one passing check and the
  last check passing, the gate promotes.
"""

from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import asdict, dataclass, fields

DECISIONS = ("continue", "promote", "rollback")
FINAL_DECISIONS = ("promote", "rollback")
RESULTS = ("pass", "fail", "inconclusive")
EVAL_RULES = ("exact", "contains")
# Same shape as an llm_service_instances name (module_utils/inventory_checks.py), which is the
# llm_instance label roles/monitoring puts on each vLLM scrape target.
INSTANCE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
# vLLM's finished_reason values counted as errors in vllm:request_success_total.
DEFAULT_ERROR_REASONS = ("error",)
METRIC_KEYS = ("up", "requests", "errors", "ttft_p99", "e2e_p99")
STATE_VERSION = 1
RECORD_VERSION = 1
# Float slack when comparing ratios and rates read back from Prometheus' decimal strings.
EPSILON = 1e-9


class GateError(ValueError):
    """A configuration, state or query answer the gate cannot use; ``field`` names the culprit."""

    def __init__(self, field, message):
        super().__init__(f"{field}: {message}")
        self.field = field


def _finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _present(value):
    """A usable number: not None, not NaN (+Inf is usable: a P99 above the largest bucket)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _fmt(value):
    if value is None:
        return "missing"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, float) and math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.4g}"


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class GateConfig:
    """The gate's thresholds. Build it with ``GateConfig.from_dict`` (validates every field)."""

    interval_seconds: int = 60
    soak_seconds: int = 172800  # the brief's 48 hours; tests use minutes
    query_window_seconds: int | None = None  # None: 5 minutes, or interval_seconds when longer
    min_requests: int = 20
    max_error_rate_increase: float = 0.01
    max_ttft_p99_ratio: float = 1.5
    max_e2e_p99_ratio: float = 1.5
    max_error_rate: float | None = None
    max_ttft_p99_seconds: float | None = None
    max_e2e_p99_seconds: float | None = None
    failure_threshold: int = 5  # Flagger's analysis.threshold in its examples
    rollback_on_absolute_breach: bool = True
    eval_min_agreement_margin: float | None = None
    error_finished_reasons: tuple = DEFAULT_ERROR_REASONS

    @property
    def window_seconds(self):
        if self.query_window_seconds is not None:
            return self.query_window_seconds
        return max(300, self.interval_seconds)

    @classmethod
    def from_dict(cls, doc):
        """Validate a mapping (the ``gate`` part of the runner's JSON config) into a GateConfig.

        Unknown keys are errors (a typo must not silently keep a default). Raises GateError
        naming the first bad field.
        """
        if isinstance(doc, GateConfig):
            return doc
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            raise GateError("gate", f"must be a mapping, not {type(doc).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise GateError(unknown[0], f"is not a gate setting (known: {', '.join(sorted(known))})")
        values = {}
        for name, (kind, low, high, optional) in _SCHEMA.items():
            if name not in doc:
                continue
            values[name] = _check_field(name, doc[name], kind, low, high, optional)
        cfg = cls(**values)
        if cfg.soak_seconds < cfg.interval_seconds:
            raise GateError("soak_seconds", f"({cfg.soak_seconds}) must be at least interval_seconds "
                                            f"({cfg.interval_seconds}): no check would run before the soak ends")
        return cfg

    def to_dict(self):
        doc = asdict(self)
        doc["error_finished_reasons"] = list(self.error_finished_reasons)
        doc["effective_query_window_seconds"] = self.window_seconds
        return doc


# name: (kind, lowest, highest, may be null)
_SCHEMA = {
    "interval_seconds": ("int", 1, 86400, False),
    "soak_seconds": ("int", 1, 90 * 86400, False),
    "query_window_seconds": ("int", 30, 86400, True),
    "min_requests": ("int", 1, 10**9, False),
    "max_error_rate_increase": ("float", 0.0, 1.0, False),
    "max_ttft_p99_ratio": ("float", 1.0, 1000.0, False),
    "max_e2e_p99_ratio": ("float", 1.0, 1000.0, False),
    "max_error_rate": ("float", 0.0, 1.0, True),
    "max_ttft_p99_seconds": ("float", 0.001, 86400.0, True),
    "max_e2e_p99_seconds": ("float", 0.001, 86400.0, True),
    "failure_threshold": ("int", 1, 1000, False),
    "rollback_on_absolute_breach": ("bool", None, None, False),
    "eval_min_agreement_margin": ("float", 0.0, 1.0, True),
    "error_finished_reasons": ("reasons", None, None, False),
}


def _check_field(name, value, kind, low, high, optional):
    if value is None:
        if optional:
            return None
        raise GateError(name, "must be set (null is allowed only for the optional limits)")
    if kind == "bool":
        if not isinstance(value, bool):
            raise GateError(name, f"must be true or false, not {value!r}")
        return value
    if kind == "reasons":
        if (not isinstance(value, (list, tuple)) or not value
                or not all(isinstance(v, str) and re.match(r"^[a-z_]+$", v) for v in value)):
            raise GateError(name, f"must be a non-empty list of vLLM finished_reason values such as [\"error\"], not {value!r}")
        return tuple(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GateError(name, f"must be a number, not {value!r}")
    if kind == "int" and (not isinstance(value, int) and not float(value).is_integer()):
        raise GateError(name, f"must be a whole number, not {value!r}")
    if not math.isfinite(value):
        raise GateError(name, f"must be a finite number, not {value!r}")
    if value < low or value > high:
        raise GateError(name, f"must be between {low} and {high}, not {value!r}")
    return int(value) if kind == "int" else float(value)


def check_instance(field, name):
    if not isinstance(name, str) or not INSTANCE_RE.match(name):
        raise GateError(field, f"{name!r} is not an instance name (llm_service_instances names match {INSTANCE_RE.pattern})")
    return name


# --------------------------------------------------------------------------- PromQL


def promql(stable_instance, candidate_instance, window, error_reasons=DEFAULT_ERROR_REASONS):
    """The queries of one check: {"stable": {key: query}, "candidate": {key: query}}.

    ``window`` is a PromQL duration ("5m") or seconds (int). Per instance (the llm_instance
    label roles/monitoring puts on job "vllm"):

    * up: 1 when Prometheus' last scrape of the instance's /metrics worked;
    * requests: requests that finished in the window, any finished_reason;
    * errors: those that finished with one of ``error_reasons`` (``or vector(0)``: vLLM may
      not have created that label value yet);
    * ttft_p99, e2e_p99: P99 of vllm:time_to_first_token_seconds and
      vllm:e2e_request_latency_seconds over the window (NaN when no request finished).
    """
    check_instance("stable_instance", stable_instance)
    check_instance("candidate_instance", candidate_instance)
    if stable_instance == candidate_instance:
        raise GateError("candidate_instance", f"is the stable instance ({stable_instance}): compare two instances")
    if isinstance(window, bool):
        raise GateError("window", f"must be seconds or a PromQL duration, not {window!r}")
    if isinstance(window, int):
        window = f"{window}s"
    if not isinstance(window, str) or not re.match(r"^([0-9]+(ms|s|m|h|d|w|y))+$", window):
        raise GateError("window", f"must be seconds or a PromQL duration such as 5m, not {window!r}")
    reasons = "|".join(error_reasons)
    if not re.match(r"^[a-z_]+(\|[a-z_]+)*$", reasons):
        raise GateError("error_finished_reasons", f"{list(error_reasons)!r} are not finished_reason values")

    def one(name):
        sel = f'job="vllm",llm_instance="{name}"'
        return {
            "up": f"max(up{{{sel}}})",
            "requests": f"sum(increase(vllm:request_success_total{{{sel}}}[{window}]))",
            "errors": (f'sum(increase(vllm:request_success_total{{{sel},finished_reason=~"{reasons}"}}[{window}]))'
                       " or vector(0)"),
            "ttft_p99": f"histogram_quantile(0.99, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{{{sel}}}[{window}])))",
            "e2e_p99": f"histogram_quantile(0.99, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket{{{sel}}}[{window}])))",
        }

    return {"stable": one(stable_instance), "candidate": one(candidate_instance)}


def parse_query_result(payload):
    """The one number of an /api/v1/query answer: float (may be NaN or +Inf), or None when empty.

    Raises GateError when Prometheus reports an error or the answer has several series (the
    gate's queries aggregate to one).
    """
    if not isinstance(payload, dict):
        raise GateError("prometheus", "answer is not a JSON object")
    if payload.get("status") != "success":
        raise GateError("prometheus", f"query failed: {payload.get('errorType', '?')}: {payload.get('error', '?')}")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise GateError("prometheus", "answer has no data")
    kind, result = data.get("resultType"), data.get("result")
    try:
        if kind == "scalar":
            return float(result[1])
        if kind == "vector":
            if not result:
                return None
            if len(result) > 1:
                raise GateError("prometheus", f"query returned {len(result)} series, expected one")
            return float(result[0]["value"][1])
    except (TypeError, KeyError, IndexError, ValueError) as exc:
        raise GateError("prometheus", f"cannot read the value of a {kind} answer: {exc}") from None
    raise GateError("prometheus", f"unexpected resultType {kind!r}")


# --------------------------------------------------------------------------- one check


def error_rate(metrics):
    """errors / requests of one instance's sample, or None when it cannot be computed."""
    requests, errors = metrics.get("requests"), metrics.get("errors")
    if not _present(requests) or not _present(errors) or not math.isfinite(requests) or requests <= 0:
        return None
    return errors / requests


def evaluate_check(config, sample):
    """Judge one sample: (result, hard, reasons).

    ``sample`` is {"stable": {...}, "candidate": {...}, "eval": {...} or absent}, each instance
    with the METRIC_KEYS (None when Prometheus had no series, NaN as Prometheus gives it).
    ``hard`` is true when the failure is a breach of the candidate's absolute limits.
    """
    cfg = GateConfig.from_dict(config)
    sample = sample or {}
    stable = sample.get("stable") or {}
    cand = sample.get("candidate") or {}
    failed, hard_failed, unjudged, passed = [], [], [], []

    up = cand.get("up")
    if not _present(up):
        unjudged.append(f"candidate up is {_fmt(up)}: no scrape target with its llm_instance label in job vllm")
    elif up < 1:
        failed.append("candidate is down: Prometheus cannot scrape its /metrics")
        return "fail", False, failed

    c_requests = cand.get("requests")
    if not _present(c_requests) or not math.isfinite(c_requests):
        unjudged.append(f"candidate requests in the window are {_fmt(c_requests)}")
        return "inconclusive", False, unjudged
    if c_requests < cfg.min_requests:
        unjudged.append(f"candidate served {_fmt(c_requests)} requests in the window, fewer than min_requests "
                        f"({cfg.min_requests})")
        return "inconclusive", False, unjudged

    c_rate = error_rate(cand)
    # Absolute limits of the candidate.
    for key, limit, label in (
        ("error_rate", cfg.max_error_rate, "error rate"),
        ("ttft_p99", cfg.max_ttft_p99_seconds, "P99 time to first token"),
        ("e2e_p99", cfg.max_e2e_p99_seconds, "P99 end-to-end latency"),
    ):
        if limit is None:
            continue
        value = c_rate if key == "error_rate" else cand.get(key)
        if not _present(value):
            unjudged.append(f"candidate {label} is {_fmt(value)}: absolute limit {limit} not judged")
        elif value > limit + EPSILON:
            hard_failed.append(f"candidate {label} {_fmt(value)} above its absolute limit {limit}")
        else:
            passed.append(f"candidate {label} {_fmt(value)} within {limit}")

    # Candidate against stable.
    s_requests = stable.get("requests")
    if not _present(s_requests) or not math.isfinite(s_requests) or s_requests < cfg.min_requests:
        unjudged.append(f"stable served {_fmt(s_requests)} requests in the window (min_requests {cfg.min_requests}): "
                        "no comparison with stable")
    else:
        s_rate = error_rate(stable)
        if c_rate is None or s_rate is None:
            unjudged.append(f"error rate not computable (candidate {_fmt(c_rate)}, stable {_fmt(s_rate)})")
        elif c_rate - s_rate > cfg.max_error_rate_increase + EPSILON:
            failed.append(f"candidate error rate {_fmt(c_rate)} exceeds stable's {_fmt(s_rate)} by more than "
                          f"{cfg.max_error_rate_increase}")
        else:
            passed.append(f"error rate {_fmt(c_rate)} vs stable {_fmt(s_rate)}")
        for key, limit, label in (
            ("ttft_p99", cfg.max_ttft_p99_ratio, "P99 time to first token"),
            ("e2e_p99", cfg.max_e2e_p99_ratio, "P99 end-to-end latency"),
        ):
            c_val, s_val = cand.get(key), stable.get(key)
            if not _present(c_val) or not _present(s_val) or not math.isfinite(s_val) or s_val <= 0:
                unjudged.append(f"{label} ratio not computable (candidate {_fmt(c_val)}, stable {_fmt(s_val)})")
                continue
            ratio = c_val / s_val
            if ratio > limit + EPSILON:
                failed.append(f"candidate {label} {_fmt(c_val)} s is {_fmt(ratio)}x stable's {_fmt(s_val)} s "
                              f"(limit {limit}x)")
            else:
                passed.append(f"{label} {_fmt(ratio)}x stable")

    if cfg.eval_min_agreement_margin is not None:
        ev = sample.get("eval") or {}
        s_ratio, c_ratio = ev.get("stable_ratio"), ev.get("candidate_ratio")
        if not _finite(s_ratio) or not _finite(c_ratio):
            unjudged.append(f"evaluation set not scored (stable {_fmt(s_ratio)}, candidate {_fmt(c_ratio)})")
        elif not eval_gate(s_ratio, c_ratio, cfg.eval_min_agreement_margin):
            failed.append(f"evaluation agreement {_fmt(c_ratio)} more than {cfg.eval_min_agreement_margin} below "
                          f"stable's {_fmt(s_ratio)}")
        else:
            passed.append(f"evaluation agreement {_fmt(c_ratio)} vs stable {_fmt(s_ratio)}")

    if hard_failed:
        return "fail", cfg.rollback_on_absolute_breach, hard_failed + failed
    if failed:
        return "fail", False, failed
    if unjudged:
        return "inconclusive", False, unjudged
    return "pass", False, passed


# --------------------------------------------------------------------------- the decision


def new_state(now, stable_instance=None, candidate_instance=None, canary_id=None):
    return {
        "version": STATE_VERSION,
        "stable_instance": stable_instance,
        "candidate_instance": candidate_instance,
        "canary_id": canary_id,
        "started_at": float(now),
        "checks": 0,
        "passes": 0,
        "failures": 0,
        "inconclusive": 0,
        "consecutive_failures": 0,
        "last_result": None,
        "last_check_at": None,
        "decision": "continue",
        "decided_at": None,
        "reasons": [],
    }


def validate_state(state):
    """Raise GateError when a loaded state file is not one the gate wrote."""
    if not isinstance(state, dict):
        raise GateError("state", "must be a JSON object")
    if state.get("version") != STATE_VERSION:
        raise GateError("state.version", f"is {state.get('version')!r}, expected {STATE_VERSION}")
    if not _finite(state.get("started_at")):
        raise GateError("state.started_at", f"must be a Unix time, not {state.get('started_at')!r}")
    for key in ("checks", "passes", "failures", "inconclusive", "consecutive_failures"):
        if not isinstance(state.get(key), int) or isinstance(state.get(key), bool) or state[key] < 0:
            raise GateError(f"state.{key}", f"must be a count, not {state.get(key)!r}")
    if state.get("decision") not in DECISIONS:
        raise GateError("state.decision", f"must be one of {', '.join(DECISIONS)}, not {state.get('decision')!r}")
    if state.get("last_result") not in (*RESULTS, None):
        raise GateError("state.last_result", f"must be one of {', '.join(RESULTS)} or null")
    return state


def decide(config, state, sample, now):
    """One gate step: (decision, new_state, reasons). Does not change ``state``.

    ``state`` None or {} starts a canary at ``now``. A state already promoted or rolled back
    keeps its decision (the caller sees ``state["decision"]`` was already final).
    """
    cfg = GateConfig.from_dict(config)
    if not _finite(now):
        raise GateError("now", f"must be a Unix time, not {now!r}")
    st = copy.deepcopy(state) if state else new_state(now)
    validate_state(st)
    if st["decision"] in FINAL_DECISIONS:
        return st["decision"], st, [f"already decided: {st['decision']} at {_iso(st.get('decided_at'))}"]

    result, hard, reasons = evaluate_check(cfg, sample)
    st["checks"] += 1
    st["last_result"] = result
    st["last_check_at"] = float(now)
    if result == "pass":
        st["passes"] += 1
        st["consecutive_failures"] = 0
    elif result == "fail":
        st["failures"] += 1
        st["consecutive_failures"] += 1
    else:
        st["inconclusive"] += 1

    elapsed = now - st["started_at"]
    reasons = [f"check {result}: " + r for r in reasons]
    if result == "fail" and hard:
        decision = "rollback"
        reasons.insert(0, "hard breach of an absolute limit: rollback without waiting for failure_threshold")
    elif st["consecutive_failures"] >= cfg.failure_threshold:
        decision = "rollback"
        reasons.insert(0, f"{st['consecutive_failures']} consecutive failed checks reached failure_threshold "
                          f"({cfg.failure_threshold})")
    elif elapsed >= cfg.soak_seconds and st["passes"] >= 1 and result == "pass":
        decision = "promote"
        reasons.insert(0, f"soak of {cfg.soak_seconds} s elapsed ({int(elapsed)} s) with {st['passes']} passing "
                          "checks and the last check passing")
    else:
        decision = "continue"
        if elapsed >= cfg.soak_seconds:
            why = "no check has passed yet" if st["passes"] == 0 else "the last check did not pass"
            reasons.insert(0, f"soak elapsed but {why}: waiting for a passing check")
        else:
            reasons.insert(0, f"soaking: {int(elapsed)} s of {cfg.soak_seconds} s; "
                              f"{st['consecutive_failures']}/{cfg.failure_threshold} consecutive failures")
    st["decision"] = decision
    st["reasons"] = reasons
    if decision in FINAL_DECISIONS:
        st["decided_at"] = float(now)
    return decision, st, reasons


# --------------------------------------------------------------------------- evaluation set


def _normalise(text):
    return " ".join(str(text).split()).casefold()


def score_eval(items, answers, rule):
    """Agreement ratio (0..1) of ``answers`` with ``items`` [{"prompt", "expected"}].

    ``rule`` "exact": the normalised answer equals the normalised expected text; "contains":
    the expected text occurs in the answer. Normalised: case-folded, runs of whitespace as one
    space, trimmed. ``expected`` may be a list of accepted answers. An answer of None (the
    request failed) does not agree.
    """
    if rule not in EVAL_RULES:
        raise GateError("rule", f"must be one of {', '.join(EVAL_RULES)}, not {rule!r}")
    if not isinstance(items, list) or not items:
        raise GateError("items", "must be a non-empty list of {prompt, expected}")
    if not isinstance(answers, list) or len(answers) != len(items):
        raise GateError("answers", f"must be a list of {len(items)} answers, one per item")
    agree = 0
    for i, (item, answer) in enumerate(zip(items, answers, strict=True)):
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str) or "expected" not in item:
            raise GateError(f"items[{i}]", "must be {\"prompt\": str, \"expected\": str or [str]}")
        expected = item["expected"]
        expected = expected if isinstance(expected, list) else [expected]
        if not expected or not all(isinstance(e, str) and e.strip() for e in expected):
            raise GateError(f"items[{i}].expected", "must be a non-empty string or list of strings")
        if answer is None:
            continue
        got = _normalise(answer)
        wanted = [_normalise(e) for e in expected]
        if (rule == "exact" and got in wanted) or (rule == "contains" and any(w in got for w in wanted)):
            agree += 1
    return agree / len(items)


def eval_gate(stable_ratio, candidate_ratio, margin):
    """True when the candidate's agreement is at most ``margin`` below stable's."""
    for field, value in (("stable_ratio", stable_ratio), ("candidate_ratio", candidate_ratio)):
        if not _finite(value) or not 0 <= value <= 1:
            raise GateError(field, f"must be a ratio between 0 and 1, not {value!r}")
    if not _finite(margin) or not 0 <= margin <= 1:
        raise GateError("margin", f"must be between 0 and 1, not {margin!r}")
    return candidate_ratio >= stable_ratio - margin - EPSILON


# --------------------------------------------------------------------------- records


def _iso(ts):
    if not _finite(ts):
        return "never"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def json_safe(value):
    """NaN and infinities as strings ("NaN", "+Inf", as Prometheus writes them): JSON has none."""
    if isinstance(value, float) and not math.isfinite(value):
        return _fmt(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def build_record(config, state, sample, decision, reasons, now, stable_instance, candidate_instance,
                 canary_id=None, prometheus_url=None):
    """A JSON-serialisable record of a gate decision (written on rollback and promote).

    Holds the time, the decision and its reasons, the sampled metrics (with the error rates
    derived from them), the gate's counters and its thresholds. No secrets: the gate config
    has none, the Prometheus URL is passed without credentials (the runner refuses URLs with
    them) and the bearer key's file is not mentioned.
    """
    cfg = GateConfig.from_dict(config)
    metrics = copy.deepcopy(sample or {})
    for side in ("stable", "candidate"):
        if isinstance(metrics.get(side), dict):
            metrics[side]["error_rate"] = error_rate(metrics[side])
    counters = {k: (state or {}).get(k) for k in
                ("started_at", "checks", "passes", "failures", "inconclusive", "consecutive_failures", "last_result")}
    return json_safe({
        "version": RECORD_VERSION,
        "time": _iso(now),
        "time_unix": float(now),
        "decision": decision,
        "reasons": list(reasons),
        "stable_instance": stable_instance,
        "candidate_instance": candidate_instance,
        "canary_id": canary_id,
        "started": _iso((state or {}).get("started_at")),
        "metrics": metrics,
        "state": counters,
        "config": cfg.to_dict(),
        "prometheus_url": prometheus_url,
    })


# --------------------------------------------------------------------------- runner config


RUNNER_KEYS = {
    "stable_instance", "candidate_instance", "canary_id", "gate", "prometheus", "state_file", "record_dir",
    "rollback_command", "promote_command", "action_timeout_seconds", "eval_results_file", "metrics_file",
}
PROMETHEUS_KEYS = {"url", "ca_file", "bearer_token_file", "timeout_seconds"}


def _abs_path(field, value, optional=False):
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.startswith("/") or "\n" in value or "\0" in value:
        raise GateError(field, f"must be an absolute path, not {value!r}")
    return value


def _argv(field, value, optional=False):
    if value is None and optional:
        return None
    if (not isinstance(value, list) or not value or not all(isinstance(a, str) and "\0" not in a for a in value)
            or not value[0].startswith("/")):
        raise GateError(field, "must be an argv list whose first item is an absolute path (it runs without a shell), "
                               f"not {value!r}")
    return list(value)


def validate_runner_config(doc):
    """Validate bin/llm-onprem-canary-gate's JSON config; returns it with ``gate`` as a GateConfig."""
    if not isinstance(doc, dict):
        raise GateError("config", "must be a JSON object")
    unknown = sorted(set(doc) - RUNNER_KEYS)
    if unknown:
        raise GateError(unknown[0], f"is not a setting (known: {', '.join(sorted(RUNNER_KEYS))})")
    for key in ("stable_instance", "candidate_instance", "state_file", "record_dir", "rollback_command", "prometheus"):
        if key not in doc:
            raise GateError(key, "is required")
    out = dict(doc)
    check_instance("stable_instance", doc["stable_instance"])
    check_instance("candidate_instance", doc["candidate_instance"])
    if doc["stable_instance"] == doc["candidate_instance"]:
        raise GateError("candidate_instance", "must differ from stable_instance")
    cid = doc.get("canary_id")
    if cid is not None and (not isinstance(cid, str) or not re.match(r"^[A-Za-z0-9._:+-]{1,128}$", cid)):
        raise GateError("canary_id", f"must be a short token (revision, recipe), not {cid!r}")
    out["gate"] = GateConfig.from_dict(doc.get("gate"))
    prom = doc["prometheus"]
    if not isinstance(prom, dict):
        raise GateError("prometheus", "must be a mapping with url (and optional ca_file, bearer_token_file)")
    unknown = sorted(set(prom) - PROMETHEUS_KEYS)
    if unknown:
        raise GateError(f"prometheus.{unknown[0]}", f"is not a setting (known: {', '.join(sorted(PROMETHEUS_KEYS))})")
    url = prom.get("url")
    m = re.match(r"^(https?)://([^/?#]+)(/[^?#]*)?$", url) if isinstance(url, str) else None
    if not m:
        raise GateError("prometheus.url", f"must be an http(s) URL without query, such as https://127.0.0.1:9090, not {url!r}")
    if "@" in m.group(2):
        raise GateError("prometheus.url", "must not carry credentials: put the key in prometheus.bearer_token_file")
    _abs_path("prometheus.ca_file", prom.get("ca_file"), optional=True)
    _abs_path("prometheus.bearer_token_file", prom.get("bearer_token_file"), optional=True)
    timeout = prom.get("timeout_seconds", 10)
    if isinstance(timeout, bool) or not _finite(timeout) or not 0 < timeout <= 300:
        raise GateError("prometheus.timeout_seconds", f"must be between 0 and 300, not {timeout!r}")
    out["prometheus"] = dict(prom, url=url.rstrip("/"), timeout_seconds=float(timeout))
    _abs_path("state_file", doc["state_file"])
    _abs_path("record_dir", doc["record_dir"])
    _abs_path("eval_results_file", doc.get("eval_results_file"), optional=True)
    _abs_path("metrics_file", doc.get("metrics_file"), optional=True)
    out["rollback_command"] = _argv("rollback_command", doc["rollback_command"])
    out["promote_command"] = _argv("promote_command", doc.get("promote_command"), optional=True)
    action_timeout = doc.get("action_timeout_seconds", 600)
    if isinstance(action_timeout, bool) or not _finite(action_timeout) or not 0 < action_timeout <= 3600:
        raise GateError("action_timeout_seconds", f"must be between 0 and 3600, not {action_timeout!r}")
    out["action_timeout_seconds"] = float(action_timeout)
    if out["gate"].eval_min_agreement_margin is not None and not doc.get("eval_results_file"):
        raise GateError("eval_results_file", "is required when gate.eval_min_agreement_margin is set")
    return out


def score_eval_results(doc):
    """{"stable_ratio", "candidate_ratio"} from an evaluation results file's content.

    The file: {"rule": "exact"|"contains", "items": [{prompt, expected}], "stable_answers": [...],
    "candidate_answers": [...]} (answers in item order, null for a failed request).
    """
    if not isinstance(doc, dict):
        raise GateError("eval_results_file", "must hold a JSON object")
    rule = doc.get("rule")
    items = doc.get("items")
    return {
        "rule": rule,
        "items": len(items) if isinstance(items, list) else None,
        "stable_ratio": score_eval(items, doc.get("stable_answers"), rule),
        "candidate_ratio": score_eval(items, doc.get("candidate_answers"), rule),
    }


def render_metrics(state, stable_instance, candidate_instance):
    """node-exporter textfile metrics of the gate's state (for an alert on a rollback)."""
    labels = f'stable="{stable_instance}",candidate="{candidate_instance}"'
    lines = [
        "# HELP llm_onprem_canary_decision 1 for the gate's current decision (continue, promote, rollback).",
        "# TYPE llm_onprem_canary_decision gauge",
    ]
    for d in DECISIONS:
        lines.append(f'llm_onprem_canary_decision{{{labels},decision="{d}"}} {1 if state.get("decision") == d else 0}')
    lines += [
        "# HELP llm_onprem_canary_consecutive_failures Consecutive failed checks of the canary gate.",
        "# TYPE llm_onprem_canary_consecutive_failures gauge",
        f"llm_onprem_canary_consecutive_failures{{{labels}}} {state.get('consecutive_failures', 0)}",
        "# HELP llm_onprem_canary_last_check_timestamp_seconds Unix time of the gate's last check.",
        "# TYPE llm_onprem_canary_last_check_timestamp_seconds gauge",
        f"llm_onprem_canary_last_check_timestamp_seconds{{{labels}}} {state.get('last_check_at') or 0}",
    ]
    return "\n".join(lines) + "\n"
