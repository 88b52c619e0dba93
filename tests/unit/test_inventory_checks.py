"""Unit tests of module_utils/inventory_checks.py (the rules of every role's validate_inventory.yml).

Each row: a role, the variables given, and a text the one expected message holds (None: no
message). The messages name the variable and the inventory file; secrets only by length.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "module_utils") not in sys.path:
    sys.path.insert(0, str(ROOT / "module_utils"))

import inventory_checks as ic  # noqa: E402

INV = "/srv/inventories/site"
STORE = [{"name": "m32", "source": "http", "revision": "r1", "manifest_url": "https://models.site/m.json"}]
INSTANCES = [{"name": "main", "model": "m32", "port": 8000}]


@pytest.mark.parametrize(
    ("role", "values", "expect"),
    [
        # single values: ranges, formats, enumerations
        ("host_tuning", {"host_tuning_swappiness": 200}, None),
        ("host_tuning", {"host_tuning_swappiness": 201}, "host_tuning_swappiness is 201: it must be an integer from 0 to 200"),
        ("host_tuning", {"host_tuning_swappiness": True}, "host_tuning_swappiness is true"),
        ("host_tuning", {"host_tuning_swappiness": "10"}, None),  # as the argument spec converts it
        ("host_tuning", {"host_tuning_hugepages_max_ram_share": 0.5}, None),
        ("host_tuning", {"host_tuning_hugepages_max_ram_share": 0}, "greater than 0 and less than 1"),
        ("host_tuning", {"host_tuning_swap_size_factor": 4}, None),
        ("host_tuning", {"host_tuning_swap_size_factor": 4.5}, "host_tuning_swap_size_factor"),
        ("host_tuning", {"host_tuning_swap_file": "/swap/../etc/passwd"}, "without '..'"),
        ("host_tuning", {"host_tuning_swap_file": "/swap file"}, "host_tuning_swap_file"),
        ("host_tuning", {"host_tuning_nccl_socket_ifname": ""}, None),
        ("host_tuning", {"host_tuning_nccl_socket_ifname": "^docker,lo"}, None),
        ("host_tuning", {"host_tuning_nccl_socket_ifname": "eth0`id`"}, "host_tuning_nccl_socket_ifname"),
        ("host_tuning", {"host_tuning_nccl_socket_ifname": "averyveryverylongifname"}, "at most 15"),
        ("host_tuning", {"host_tuning_limits_memlock": "unlimited"}, None),
        ("host_tuning", {"host_tuning_nccl_extra_env": {"NCCL_P2P_LEVEL": "NVL"}}, None),
        ("host_tuning", {"host_tuning_nccl_extra_env": {"NCCL_X": "a$b"}}, "host_tuning_nccl_extra_env has 'NCCL_X'"),
        ("host_tuning", {"host_tuning_nccl_enabled": False, "host_tuning_nccl_extra_env": {"BAD": "x"}}, None),
        ("host_tuning", {"host_tuning_sysctl_extra": {"vm.max_map_count": 1048576}}, None),
        ("host_tuning", {"host_tuning_sysctl_extra": {"max_map_count": 1}}, "host_tuning_sysctl_extra has 'max_map_count'"),
        ("nvidia_driver", {"nvidia_driver_branch": "580", "nvidia_driver_required_cuda": "13.0"}, None),
        ("nvidia_driver", {"nvidia_driver_branch": "575", "nvidia_driver_required_cuda": "13.0"}, "cannot run CUDA 13.0"),
        ("nvidia_driver", {"nvidia_driver_branch": "580", "nvidia_driver_required_cuda": "14.2"}, "not in the role's driver table"),
        ("nvidia_driver", {"nvidia_driver_branch": "580", "nvidia_driver_version": "580.95.05"}, None),
        ("nvidia_driver", {"nvidia_driver_branch": "580", "nvidia_driver_version": "575.1"}, "nvidia_driver_version"),
        ("nvidia_driver", {"nvidia_driver_repo_url": "file:///srv/mirror/"}, None),
        ("nvidia_driver", {"nvidia_driver_repo_url": "https://"}, "naming a host"),
        ("nvidia_driver", {"nvidia_driver_repo_url": "https://mirror:99999/"}, "port from 1 to 65535"),
        ("nvidia_driver", {"nvidia_driver_repo_key_fingerprints": ["EB69 3B30 35CD 5710 E231  E123 A4B4 6996 3BF8 63CC"]}, None),
        ("nvidia_driver", {"nvidia_driver_pin_packages": []}, "at least one entry"),
        ("nvidia_driver", {"nvidia_driver_cuda_packages": [{"name": "libnccl2"}]}, "nvidia_driver_cuda_packages"),
        ("nvidia_driver", {"nvidia_driver_repo_key_url": "https://k/x.pub", "nvidia_driver_repo_key_src": "/k.pub"}, "both set"),
        ("llm_runtime", {"llm_runtime_vllm_version": "0.32.0"}, None),
        ("llm_runtime", {"llm_runtime_vllm_version": "0.32.0rc1"}, None),
        ("llm_runtime", {"llm_runtime_vllm_version": "~=0.32"}, "llm_runtime_vllm_version"),
        ("llm_runtime", {"llm_runtime_serve_extra_packages": ["flashinfer-python==0.4.1"]}, None),
        ("llm_runtime", {"llm_runtime_serve_extra_packages": ["flashinfer-python>=0.4"]}, "name==version"),
        ("llm_runtime", {"llm_runtime_extra_index_urls": ["https://download.pytorch.org/whl/cpu"]}, None),
        ("llm_runtime", {"llm_runtime_extra_index_urls": ["download.pytorch.org/whl/cpu"]}, "llm_runtime_extra_index_urls"),
        ("llm_runtime", {"llm_runtime_method": "conda", "llm_runtime_conda_installer_url": "https://m/x.sh",
                         "llm_runtime_conda_installer_sha256": "a" * 64, "llm_runtime_conda_channels": ["conda-forge"]}, None),
        ("llm_runtime", {"llm_runtime_serve_enabled": False, "llm_runtime_quant_enabled": False}, "build nothing"),
        ("model_store", {"model_store_root": "/var/lib/llm-onprem/models", "model_store_models": STORE}, None),
        ("model_store", {"model_store_root": "/var/lib/"}, "dedicated directory"),
        ("model_store", {"model_store_file_mode": "640"}, None),
        ("model_store", {"model_store_models": [dict(STORE[0], name="a/b")]}, "model_store_models entry \"a/b\""),
        ("model_store", {"model_store_models": [dict(STORE[0], name="current")]}, "other than current"),
        ("model_store", {"model_store_models": [dict(STORE[0], revision="..")]}, "revision"),
        ("model_store", {"model_store_models": [{"name": "x", "source": "hub", "repo_id": "org/x", "revision": "a" * 40}]}, None),
        ("model_store", {"model_store_models": [{"name": "x", "source": "hub", "repo_id": "x", "revision": "a" * 40}]}, "org/name"),
        ("model_store", {"model_store_models": [{"name": "x", "source": "local", "revision": "r", "path": "share/x"}]}, "path"),
        ("model_store", {"model_store_hub_token": "hf_abc def"}, "a secret of 10 characters"),
        ("quantize", {"quantize_models": [{"name": "q", "source": "m32"}], "model_store_models": STORE}, None),
        ("quantize", {"quantize_models": [{"name": "q", "source": "m14"}], "model_store_models": STORE}, "not a model_store_models name"),
        ("quantize", {"quantize_models": [{"name": "q", "source": "m14"}]}, None),  # no store listed: not checked
        ("quantize", {"quantize_models": [{"name": "q", "source": "m32", "group_size": 256}]}, None),
        ("quantize", {"quantize_models": [{"name": "q", "source": "m32", "group_size": 48}]}, "group_size"),
        ("quantize", {"quantize_models": [{"name": "q", "source": "m32", "scheme": "W8A8", "group_size": 48}]}, None),
        ("quantize", {"quantize_models": [{"name": "q", "source": "m32", "method": "gptq", "calibration_path": "/c.jsonl",
                                           "pipeline": "model_free"}]}, "model_free"),
        ("quantize", {"quantize_models": [{"name": "m32", "source": "/srv/m"}], "model_store_models": STORE}, "same store"),
        ("quantize", {"quantize_models": [{"name": "q", "source": "m32"}, {"name": "q", "source": "m32"}]}, "twice"),
        ("llm_service", {"llm_service_instances": INSTANCES, "model_store_models": STORE}, None),
        ("llm_service", {"llm_service_instances": []}, "at least one instance"),
        ("llm_service", {"llm_service_instances": [dict(INSTANCES[0], model="m7")], "model_store_models": STORE},
         "neither a model_store_models nor a quantize_models name"),
        ("llm_service", {"llm_service_instances": [dict(INSTANCES[0], model="m7")], "model_store_models": STORE,
                         "quantize_models": [{"name": "m7", "source": "m32"}]}, None),
        ("llm_service", {"llm_service_instances": [dict(INSTANCES[0], model_path="/srv/m")]}, "exactly one of model"),
        # Shares per GPU, with the planner's default placement (llm_host_plan.default_gpu_count):
        # an instance without gpus takes the first TP x PP GPUs, so PP 2 reaches GPU 1.
        ("llm_service", {"llm_service_instances": [
            dict(INSTANCES[0], pipeline_parallel_size=2, gpu_memory_utilization=0.6),
            dict(INSTANCES[0], name="b", port=8001, gpus=[1], gpu_memory_utilization=0.5)]}, "on GPU 1 add up to 1.10"),
        ("llm_service", {"llm_service_instances": [
            dict(INSTANCES[0], gpu_memory_utilization=0.6),
            dict(INSTANCES[0], name="b", port=8001, gpus=[1], gpu_memory_utilization=0.5)]}, None),
        ("llm_service", {"llm_service_instances": [dict(INSTANCES[0], name="a..b")]}, "lower-case letters"),
        ("llm_service", {"llm_service_instances": [dict(INSTANCES[0], extra_args=["--enable-prefix-caching"])]}, None),
        ("llm_service", {"llm_service_instances": [dict(INSTANCES[0], extra_args=["--kv-cache-dtype", "fp8"])]}, "extra_args"),
        ("llm_service", {"llm_service_reasoning_parser": ""}, None),
        ("llm_service", {"llm_service_reasoning_parser": "qwen3"}, None),
        ("llm_service", {"llm_service_reasoning_parser": "r1"}, "\"deepseek_r1\""),
        ("llm_service", {"llm_service_api_key": "x" * 32}, None),
        ("llm_service", {"llm_service_api_key": "x" * 31 + " "}, "a secret of 32 characters"),
        ("llm_service", {"llm_service_probe_max_tokens": 64, "llm_max_model_len": 64}, "less than llm_max_model_len"),
        ("llm_service", {"llm_service_environment": {"HF_HOME": "/srv/hf"}}, None),
        ("llm_service", {"llm_service_environment": {"hf_home": "/srv/hf"}}, "llm_service_environment has \"hf_home\""),
        ("gateway", {"gateway_port": 443, "gateway_upstreams": [{"name": "main", "port": 8000}],
                     "llm_service_instances": INSTANCES}, None),
        ("gateway", {"gateway_port": 0}, "gateway_port is 0"),
        ("gateway", {"gateway_listen_address": "::"}, "an IPv4 address"),
        ("gateway", {"gateway_upstreams": [{"name": "main", "port": 8000, "host": "10.0.0.5"}],
                     "llm_service_instances": INSTANCES}, None),  # another host's instance: not checked here
        ("gateway", {"gateway_upstreams": [{"name": "main", "port": 8000, "weight": 0}]}, "weight"),
        ("gateway", {"gateway_upstreams": [{"name": "a", "port": 1}, {"name": "a", "port": 2}]}, "twice"),
        ("gateway", {"gateway_port": 22, "gateway_ssh_port": 22, "gateway_firewall_enabled": False}, "cannot share a port"),
        ("gateway", {"gateway_allowed_networks": ["10.0.0.0/8", "fd00::/8"]}, None),
        ("gateway", {"gateway_allowed_networks": "10.0.0.0/8"}, "gateway_allowed_networks"),
        ("gateway", {"gateway_firewall_enabled": False, "gateway_allowed_networks": []}, None),
        ("gateway", {"gateway_ssh_port": 2222, "ansible_port": 2222}, None),
        ("gateway", {"gateway_ssh_port": 22, "ansible_port": 2222}, "it must be 2222"),
        ("gateway", {"gateway_ssh_port": 22, "ansible_port": 2222, "ansible_connection": "podman"}, None),
        ("gateway", {"gateway_tls_mode": "generated", "gateway_tls_generated_days": 825, "gateway_tls_ca_days": 365}, "outlive"),
        ("gateway", {"gateway_tls_generated_sans": ["llm.site.internal", "10.0.0.5", "*.site.internal"]}, None),
        ("gateway", {"gateway_server_names": ["llm_site"]}, "gateway_server_names"),
        ("gateway", {"gateway_health_path": "/"}, "must not be / or under /v1"),
        # Routing by model name: each upstream's model is its own or its instance's served name.
        ("gateway", {"gateway_upstreams": [{"name": "a", "port": 8000, "model": "stub-a"},
                                           {"name": "b", "port": 8001, "model": "stub-b"}]}, None),
        ("gateway", {"gateway_upstreams": [{"name": "a", "port": 8000, "model": "two words"}]}, "model \"two words\""),
        ("gateway", {"gateway_upstreams": [{"name": "a", "port": 8000, "model": ""}]}, "a non-empty string"),
        ("gateway", {"gateway_upstreams": [{"name": "a", "port": 8000, "model": 'q"uote'}]}, "without whitespace, quotes"),
        ("gateway", {"gateway_upstreams": [{"name": "a", "port": 8000, "model": 7}]}, "model 7 must be"),
        ("gateway", {"gateway_upstreams": [{"name": "main", "port": 8000, "model": "main"}],
                     "llm_service_instances": INSTANCES}, None),  # the same name, said twice
        ("gateway", {"gateway_upstreams": [{"name": "main", "port": 8000, "model": "r1"}],
                     "llm_service_instances": INSTANCES}, "is not what the instance on port 8000 serves (\"main\""),
        ("gateway", {"gateway_upstreams": [{"name": "main", "port": 8000},
                                           {"name": "far", "port": 8000, "host": "10.0.0.5", "model": "main"}],
                     "llm_service_instances": INSTANCES}, None),  # a replica on another host names its model
        ("gateway", {"gateway_upstreams": [{"name": "main", "port": 8000},
                                           {"name": "far", "port": 8000, "host": "10.0.0.5"}],
                     "llm_service_instances": INSTANCES}, "entry \"far\": the gateway cannot tell which model"),
        ("gateway", {"gateway_upstreams": [{"name": "a", "port": 8000, "model": "stub-a"}, {"name": "b", "port": 8001}]},
         "llm_service_instances is not defined"),
        ("gateway", {"gateway_upstreams": [{"name": "a", "port": 8000}, {"name": "b", "port": 8001}]}, None),
        # Canary: a candidate for a model that a stable entry serves, a percent from 0 to 100.
        ("gateway", {"gateway_upstreams": [{"name": "main", "port": 8000},
                                           {"name": "next", "port": 8001, "model": "main", "canary_percent": 5}],
                     "llm_service_instances": INSTANCES + [dict(INSTANCES[0], name="next", port=8001,
                                                                 served_model_name="main")]}, None),
        ("gateway", {"gateway_upstreams": [{"name": "a", "port": 8000, "model": "m"},
                                           {"name": "c", "port": 8001, "model": "m", "canary_percent": 0}]}, None),
        ("gateway", {"gateway_upstreams": [{"name": "a", "port": 8000, "model": "m"},
                                           {"name": "c", "port": 8001, "model": "m", "canary_percent": 12.5}]}, None),
        ("gateway", {"gateway_upstreams": [{"name": "a", "port": 8000, "model": "m"},
                                           {"name": "c", "port": 8001, "model": "m", "canary_percent": None}]}, None),
        ("gateway", {"gateway_upstreams": [{"name": "a", "port": 8000, "model": "m"},
                                           {"name": "c", "port": 8001, "model": "m", "canary_percent": 101}]},
         "canary_percent 101 must be a number from 0 to 100"),
        ("gateway", {"gateway_upstreams": [{"name": "a", "port": 8000, "model": "m"},
                                           {"name": "c", "port": 8001, "model": "m", "canary_percent": -1}]},
         "canary_percent -1 must be"),
        ("gateway", {"gateway_upstreams": [{"name": "a", "port": 8000, "model": "m"},
                                           {"name": "c", "port": 8001, "model": "m", "canary_percent": "5"}]},
         "canary_percent \"5\" must be"),
        ("gateway", {"gateway_upstreams": [{"name": "a", "port": 8000, "model": "m"},
                                           {"name": "c", "port": 8001, "model": "m", "canary_percent": True}]},
         "canary_percent true must be"),
        ("gateway", {"gateway_upstreams": [{"name": "a", "port": 8000, "model": "m"},
                                           {"name": "c", "port": 8001, "model": "m", "canary_percent": 5},
                                           {"name": "d", "port": 8002, "model": "m", "canary_percent": 5}]},
         "at most one candidate per model"),
        ("gateway", {"gateway_upstreams": [{"name": "a", "port": 8000, "model": "m"},
                                           {"name": "c", "port": 8001, "model": "n", "canary_percent": 5}]},
         "no entry without canary_percent serves that model"),
        ("gateway", {"gateway_upstreams": [{"name": "a", "port": 8000},
                                           {"name": "c", "port": 8001, "canary_percent": 5}]},
         "it has canary_percent but the gateway cannot tell which model"),
        ("preflight", {"llm_weights": "w4a16", "llm_weights_group_size": 64}, None),
        ("preflight", {"llm_weights": "bf16", "llm_weights_group_size": 100}, None),
        ("preflight", {"llm_weights": "gptq", "llm_weights_group_size": 100}, "llm_weights_group_size"),
    ],
)
def test_inventory_errors(role, values, expect):
    errors = ic.inventory_errors(values, role, INV, "llm_servers")
    if expect is None:
        assert errors == []
    else:
        assert len(errors) == 1, errors
        assert expect in errors[0]


@pytest.mark.parametrize(
    ("role", "name", "file"),
    [
        ("host_tuning", "host_tuning_swappiness", f"{INV}/group_vars/llm_servers/host_tuning.yml"),
        ("llm_service", "llm_service_log_lines", f"{INV}/group_vars/llm_servers/llm_service.yml"),
        ("preflight", "llm_weights_group_size", f"{INV}/group_vars/all/deployment.yml"),
    ],
)
def test_messages_name_the_inventory_file(role, name, file):
    values = {name: -5} if role != "preflight" else {"llm_weights": "awq", name: -5}
    errors = ic.inventory_errors(values, role, INV, "llm_servers")
    assert errors and errors[0].startswith(name) and errors[0].endswith(f"Set it in {file}.")


def test_secrets_are_shown_by_length_only():
    errors = ic.inventory_errors({"llm_service_api_key": "s3cr3t"}, "llm_service", INV, "llm_servers")
    assert errors and "s3cr3t" not in errors[0] and "6 characters" in errors[0]


def test_every_role_of_site_yml_has_rules():
    assert set(ic.FIELDS) == set(ic.COMBOS) == {"preflight", "host_tuning", "nvidia_driver", "llm_runtime",
                                                 "model_store", "quantize", "llm_service", "gateway"}
    with pytest.raises(ValueError):
        ic.inventory_errors({}, "monitoring")


def test_every_table_variable_is_a_role_option():
    import yaml

    for role, fields in ic.FIELDS.items():
        spec = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
        options = spec["argument_specs"]["main"]["options"]
        assert not set(fields) - set(options), (role, set(fields) - set(options))
