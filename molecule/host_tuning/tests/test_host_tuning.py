"""Verify host_tuning's persistent configuration inside a systemd container.

Values asserted here are the role defaults plus molecule.yml's group_vars
(swap capped at 64 MiB, one extra NCCL variable).
"""

SWAP_BYTES = 64 * 1024 * 1024


def test_sysctl_file(host):
    conf = host.file("/etc/sysctl.d/60-llm-onprem.conf")
    assert conf.user == "root" and conf.mode == 0o644
    lines = [line for line in conf.content_string.splitlines() if not line.startswith("#")]
    assert lines == ["vm.nr_hugepages = 2048", "vm.swappiness = 10"]


def test_thp_unit_enabled_and_skipped_in_container(host):
    unit = host.file("/etc/systemd/system/llm-onprem-thp.service")
    assert unit.mode == 0o644
    assert "echo never > /sys/kernel/mm/transparent_hugepage/enabled" in unit.content_string
    assert "echo never > /sys/kernel/mm/transparent_hugepage/defrag" in unit.content_string
    assert "Before=basic.target" in unit.content_string
    assert host.service("llm-onprem-thp.service").is_enabled
    # /sys is read-only in a container: the unit's condition keeps it from failing.
    shown = host.check_output("systemctl show -p ConditionResult -p ActiveState llm-onprem-thp.service")
    assert "ActiveState=failed" not in shown


def test_swap_file(host):
    swap = host.file("/swapfile")
    assert swap.exists and swap.user == "root" and swap.mode == 0o600
    assert swap.size == SWAP_BYTES
    header = host.check_output("dd if=/swapfile bs=4096 count=1 status=none | tail -c 10")
    assert header == "SWAPSPACE2"


def test_fstab_entry(host):
    entries = [line.split() for line in host.file("/etc/fstab").content_string.splitlines()
               if line.startswith("/swapfile")]
    assert entries == [["/swapfile", "none", "swap", "sw", "0", "0"]]


def test_nccl_env_file(host):
    env = host.file("/etc/llm-onprem/nccl.env")
    assert env.mode == 0o644 and env.user == "root"
    lines = sorted(line for line in env.content_string.splitlines() if not line.startswith("#"))
    iface = host.check_output("ip -4 route show default | awk '{print $5; exit}'")
    assert iface
    assert lines == [
        'NCCL_DEBUG="WARN"',
        'NCCL_IB_DISABLE="1"',
        'NCCL_P2P_LEVEL="NVL"',
        f'NCCL_SOCKET_IFNAME="{iface}"',
    ]


def test_nccl_env_reaches_a_service(host):
    out = host.check_output(
        "systemd-run --quiet --wait --pipe -p EnvironmentFile=/etc/llm-onprem/nccl.env "
        "/usr/bin/env")
    assert "NCCL_P2P_LEVEL=NVL" in out.splitlines()
    assert "NCCL_DEBUG=WARN" in out.splitlines()


def test_nccl_profile_script(host):
    script = host.file("/etc/profile.d/llm-onprem-nccl.sh")
    assert script.mode == 0o644
    out = host.check_output("sh -c '. /etc/profile.d/llm-onprem-nccl.sh && env'")
    assert "NCCL_IB_DISABLE=1" in out.splitlines()


def test_limits(host):
    limits = host.file("/etc/security/limits.d/60-llm-onprem.conf")
    assert limits.mode == 0o644
    rows = [line.split() for line in limits.content_string.splitlines()
            if line and not line.startswith("#")]
    assert rows == [
        ["llm-onprem", "soft", "memlock", "unlimited"],
        ["llm-onprem", "hard", "memlock", "unlimited"],
        ["llm-onprem", "soft", "nofile", "1048576"],
        ["llm-onprem", "hard", "nofile", "1048576"],
    ]
