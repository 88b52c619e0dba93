#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: llm_probe
short_description: Prove an OpenAI-compatible vLLM endpoint works - health, models, one chat completion
description:
  - Waits until C(<base_url><health_path>) answers 200, then checks that C(/v1/models) lists I(model)
    and that one chat completion returns an answer, with the reasoning apart from the content.
  - With I(unit) it watches that systemd unit while waiting and stops early when the unit has failed
    or stopped (a crash loop that hit its start limit), returning the unit's last journal lines.
  - The API key is a no_log parameter sent only in the Authorization header.
  - Read-only; runs in check mode only with I(check_mode_probe=true).
version_added: "1.0.0"
author: llm-onprem maintainers
options:
  base_url:
    description: Endpoint root, e.g. C(http://127.0.0.1:8000) or C(https://gateway.example:443).
    type: str
    required: true
  api_key:
    description: Bearer key for C(/v1) paths.
    type: str
    required: true
    no_log: true
  model:
    description: Served model name expected in C(/v1/models) and used for the completion.
    type: str
    required: true
  health_path:
    description: Path that must answer 200 before the other checks.
    type: str
    default: /health
  timeout:
    description: Seconds for the whole probe (waiting for health included).
    type: int
    default: 900
  interval:
    description: Seconds between health attempts.
    type: int
    default: 3
  request_timeout:
    description: Seconds for the chat completion request itself.
    type: int
    default: 300
  prompt:
    description: User message of the chat completion.
    type: str
    default: "Reply with one short sentence: is the service up?"
  max_tokens:
    description: max_tokens of the chat completion.
    type: int
    default: 64
  unit:
    description: systemd unit serving the endpoint, watched while waiting.
    type: str
  log_lines:
    description: Journal lines of I(unit) returned on failure.
    type: int
    default: 60
  ca_path:
    description: CA bundle that signs the endpoint's certificate (https).
    type: path
  validate_certs:
    description: Verify the endpoint's TLS certificate.
    type: bool
    default: true
  check_mode_probe:
    description: Probe in check mode too (the endpoint is only read).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Wait for the instance to answer
  llm_probe:
    base_url: http://127.0.0.1:8000
    api_key: "{{ llm_service_api_key }}"
    model: r1-32b
    unit: llm-onprem@main.service
    timeout: 900
"""

RETURN = r"""
seconds_to_health:
  description: Seconds until the health path answered 200.
  returned: success
  type: float
models:
  description: Model ids listed by /v1/models.
  returned: success
  type: list
  elements: str
completion:
  description: content, reasoning, finish_reason, model, prompt_tokens, completion_tokens and seconds of the chat completion.
  returned: success
  type: dict
summary:
  description: One line about the completion.
  returned: success
  type: str
stage:
  description: On failure, the step that failed (health, models, chat, unit).
  returned: failure
  type: str
journal:
  description: On failure with I(unit), the unit's last journal lines.
  returned: failure
  type: list
  elements: str
"""

import json
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.llm_probe import (ProbeError, chat_request, join_url, parse_chat, parse_models,
                                            parse_unit, summarize, unit_gave_up)
from ansible.module_utils.urls import open_url


def _request(module, url, key=None, body=None, timeout=10):
    headers = {"Accept": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body)
    resp = open_url(url, data=data, headers=headers, method="POST" if body is not None else "GET",
                    timeout=timeout, validate_certs=module.params["validate_certs"],
                    ca_path=module.params["ca_path"], use_proxy=False)
    return resp.getcode(), resp.read()


def _describe(exc):
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        hint = " (wrong API key?)" if code in (401, 403) else ""
        return f"HTTP {code} {getattr(exc, 'reason', '')}{hint}"
    return str(getattr(exc, "reason", exc))


def _unit_state(module, unit):
    systemctl = module.get_bin_path("systemctl", required=True)
    _rc, out, _err = module.run_command([systemctl, "show", "-p", "LoadState,ActiveState,SubState,NRestarts,Result", unit],
                                        environ_update={"LC_ALL": "C"})
    return parse_unit(out)


def _journal(module, unit):
    journalctl = module.get_bin_path("journalctl")
    if not journalctl:
        return []
    _rc, out, _err = module.run_command([journalctl, "-u", unit, "-n", str(module.params["log_lines"]), "--no-pager", "-o", "cat"],
                                        environ_update={"LC_ALL": "C"})
    return out.splitlines()


def wait_for_health(module, deadline):
    params = module.params
    url = join_url(params["base_url"], params["health_path"])
    start, last = time.monotonic(), "no answer yet"
    while True:
        try:
            code, _body = _request(module, url, timeout=10)
            if code == 200:
                return time.monotonic() - start
            last = f"HTTP {code}"
        except Exception as exc:  # noqa: BLE001 - any failure to connect means "not yet"
            last = _describe(exc)
        if params["unit"]:
            verdict = unit_gave_up(_unit_state(module, params["unit"]))
            if verdict:
                raise ProbeError("unit", f"{params['unit']}: {verdict} (last answer from {url}: {last})")
        if time.monotonic() + params["interval"] > deadline:
            raise ProbeError("health", f"{url} did not answer 200 within {params['timeout']} s (last: {last})")
        time.sleep(params["interval"])


def probe(module):
    params = module.params
    deadline = time.monotonic() + params["timeout"]
    result = {"seconds_to_health": round(wait_for_health(module, deadline), 1)}
    try:
        _code, body = _request(module, join_url(params["base_url"], "/v1/models"), key=params["api_key"], timeout=30)
    except Exception as exc:  # noqa: BLE001
        raise ProbeError("models", f"/v1/models failed: {_describe(exc)}") from None
    result["models"] = parse_models(body)
    if params["model"] not in result["models"]:
        raise ProbeError("models", "/v1/models lists {}, not {}".format(result["models"], params["model"]))
    body = chat_request(params["model"], params["prompt"], params["max_tokens"])
    start = time.monotonic()
    timeout = max(5, min(params["request_timeout"], int(deadline - start) + 5))
    try:
        _code, answer = _request(module, join_url(params["base_url"], "/v1/chat/completions"), key=params["api_key"],
                                 body=body, timeout=timeout)
    except Exception as exc:  # noqa: BLE001
        raise ProbeError("chat", f"the chat completion failed: {_describe(exc)}") from None
    completion = parse_chat(answer)
    completion["seconds"] = round(time.monotonic() - start, 2)
    result["completion"] = completion
    result["summary"] = summarize(completion)
    return result


def main():
    module = AnsibleModule(argument_spec={
        "base_url": {"type": "str", "required": True},
        "api_key": {"type": "str", "required": True, "no_log": True},
        "model": {"type": "str", "required": True},
        "health_path": {"type": "str", "default": "/health"},
        "timeout": {"type": "int", "default": 900},
        "interval": {"type": "int", "default": 3},
        "request_timeout": {"type": "int", "default": 300},
        "prompt": {"type": "str", "default": "Reply with one short sentence: is the service up?"},
        "max_tokens": {"type": "int", "default": 64},
        "unit": {"type": "str"},
        "log_lines": {"type": "int", "default": 60},
        "ca_path": {"type": "path"},
        "validate_certs": {"type": "bool", "default": True},
        "check_mode_probe": {"type": "bool", "default": False},
    }, supports_check_mode=True)
    if module.check_mode and not module.params["check_mode_probe"]:
        module.exit_json(changed=False, skipped=True, msg="not probed in check mode")
    try:
        result = probe(module)
    except ProbeError as exc:
        journal = _journal(module, module.params["unit"]) if module.params["unit"] else []
        tail = ("\nLast journal lines of {}:\n{}".format(module.params["unit"], "\n".join(journal[-25:]))) if journal else ""
        module.fail_json(msg=f"{exc}{tail}", stage=exc.stage, journal=journal)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
