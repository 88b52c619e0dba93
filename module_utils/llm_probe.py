"""Readiness and smoke probes of an OpenAI-compatible vLLM endpoint.

Pure functions used by library/llm_probe.py (HTTP and systemctl stay in the
module); the unit tests call them directly. A probe is: /health answers 200,
/v1/models lists the served model, one chat completion returns an answer, with
the reasoning (the <think> part, split out by vLLM's reasoning parser) apart
from the content.
"""

from __future__ import annotations

import json


class ProbeError(Exception):
    """A probe step failed; stage names the step (health, models, chat, unit)."""

    def __init__(self, stage, message):
        super().__init__(message)
        self.stage = stage


def join_url(base, path):
    """base URL + path with exactly one slash between them."""
    return base.rstrip("/") + "/" + path.lstrip("/")


def chat_request(model, prompt, max_tokens, temperature=0.0):
    """Body of the chat completion the probe sends."""
    if not prompt:
        raise ProbeError("chat", "the probe prompt is empty")
    if max_tokens < 1:
        raise ProbeError("chat", f"max_tokens must be >= 1 (got {max_tokens})")
    return {"model": model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": temperature, "stream": False}


def _load(body, stage):
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            return json.loads(body)
        except ValueError:
            raise ProbeError(stage, f"the answer is not JSON: {body[:200]!r}") from None
    return body


def parse_models(body):
    """Model ids of a /v1/models answer."""
    doc = _load(body, "models")
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise ProbeError("models", f"/v1/models has no data list: {str(doc)[:200]}")
    return [m.get("id") for m in data if isinstance(m, dict) and m.get("id")]


def parse_chat(body):
    """content, reasoning, finish_reason and usage of a chat completion answer.

    vLLM puts the reasoning in message.reasoning (0.10+) or message.reasoning_content
    (older releases); either is accepted.
    """
    doc = _load(body, "chat")
    if isinstance(doc, dict) and "error" in doc and "choices" not in doc:
        err = doc["error"]
        raise ProbeError("chat", "the server answered with an error: {}".format(err.get("message", err) if isinstance(err, dict) else err))
    choices = doc.get("choices") if isinstance(doc, dict) else None
    if not choices or not isinstance(choices[0], dict) or not isinstance(choices[0].get("message"), dict):
        raise ProbeError("chat", f"the answer has no choices[0].message: {str(doc)[:200]}")
    message = choices[0]["message"]
    reasoning = message.get("reasoning")
    if reasoning is None:
        reasoning = message.get("reasoning_content")
    content = message.get("content") or ""
    if not content and not reasoning:
        raise ProbeError("chat", "the completion is empty (no content and no reasoning)")
    usage = doc.get("usage") or {}
    return {"content": content, "reasoning": reasoning or "", "finish_reason": choices[0].get("finish_reason"),
            "model": doc.get("model"), "completion_tokens": usage.get("completion_tokens"),
            "prompt_tokens": usage.get("prompt_tokens")}


def parse_unit(text):
    """`systemctl show -p ActiveState,SubState,NRestarts,Result UNIT` -> dict."""
    props = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key.strip()] = value.strip()
    restarts = props.get("NRestarts", "")
    props["NRestarts"] = int(restarts) if restarts.isdigit() else None
    return props


def unit_gave_up(props):
    """Reason string when the unit will not come up by waiting longer, else None.

    'activating/auto-restart' is a crash being restarted: still worth waiting,
    unless the start limit has been hit (then the state is 'failed').
    """
    state, sub = props.get("ActiveState"), props.get("SubState")
    if state == "failed":
        return "the unit failed (result {})".format(props.get("Result") or "unknown")
    if state == "inactive":
        return "the unit is not running (inactive/{})".format(sub or "dead")
    if props.get("LoadState") == "not-found":
        return "the unit does not exist"
    return None


def summarize(result):
    """One line for the play's output."""
    text = (result.get("content") or "").strip().replace("\n", " ")
    return "{} answered in {:.1f} s (finish {}): {!r}".format(
        result.get("model") or "model", result.get("seconds", 0.0), result.get("finish_reason"), text[:120])
