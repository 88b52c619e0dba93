#!/usr/bin/env bash
# Run the KVM guest scenario (molecule/kvm_host_tuning) that proves
# host_tuning on a live kernel and across a reboot.
#
#   tests/harness/kvm/run-scenario.sh
#
# Without /dev/kvm the scenario cannot run: it prints SKIPPED and exits 0,
# so the test runner's log always says so. Every other problem fails.
# Prints timings for the image build, the guest boot, the reboot and the
# whole scenario.
#
# Environment:
#   LLM_ONPREM_VENV       virtualenv with molecule (default: <repo>/.venv,
#                         else molecule from PATH)
#   LLM_ONPREM_KVM_CACHE  image cache (default: <repo>/.cache/kvm)
set -euo pipefail

script_dir="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
repo_root="$(cd "${script_dir}/../../.." && pwd)"
scenario="kvm_host_tuning"

say() { printf '[kvm] %s\n' "$*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

if [ ! -e /dev/kvm ]; then
    say "SKIPPED: molecule scenario ${scenario}: /dev/kvm is absent on this host, so host_tuning's live kernel effects (THP, hugepages, swap, sysctls, reboot) are NOT tested here."
    exit 0
fi
if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
    say "FAILED: /dev/kvm exists but $(id -un) cannot open it read/write: add the user to group '$(stat -c %G /dev/kvm)' (then log in again) or run as root." >&2
    exit 1
fi

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

# Host tools the scenario needs, installed only when missing.
missing=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
command -v qemu-img >/dev/null 2>&1 || missing+=(qemu-utils)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
command -v mkfs.ext4 >/dev/null 2>&1 || [ -x /usr/sbin/mkfs.ext4 ] || missing+=(e2fsprogs)
command -v ssh-keyscan >/dev/null 2>&1 || missing+=(openssh-client)
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
        || { as_root apt-get update && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; }
fi

venv="${LLM_ONPREM_VENV:-${repo_root}/.venv}"
if [ -x "${venv}/bin/molecule" ]; then
    export PATH="${venv}/bin:${PATH}"
fi
command -v molecule >/dev/null 2>&1 || { say "FAILED: molecule not found (looked in ${venv}/bin and PATH)" >&2; exit 1; }

# The image is built (or taken from the cache) before molecule so its time
# is reported on its own; create.yml then finds it cached.
t0="$(now)"
image_dir="$(bash "${script_dir}/build-image.sh" | tail -n1)"
image_s="$(since "${t0}")"
built_s="$(sed -n 's/^build_seconds=//p' "${image_dir}/build-info")"

log="$(mktemp "${TMPDIR:-/tmp}/kvm-scenario.XXXXXX.log")"
finish() {
    rc=$?
    if [ "${rc}" -ne 0 ]; then
        # molecule destroys on failure itself; this also covers interrupts.
        (cd "${repo_root}" && molecule destroy -s "${scenario}" >/dev/null 2>&1) || true
        say "FAILED: molecule scenario ${scenario} (rc ${rc}); full log: ${log}" >&2
    fi
}
trap finish EXIT

# Molecule names its working directory after the checkout's basename only,
# so two clones called "main" (a developer's and CI's) would share it and
# destroy each other's guest. Keep this clone's state inside the clone.
export MOLECULE_EPHEMERAL_DIRECTORY="${MOLECULE_EPHEMERAL_DIRECTORY:-${repo_root}/.cache/molecule/${scenario}}"
mkdir -p "${MOLECULE_EPHEMERAL_DIRECTORY}"

cd "${repo_root}"
t1="$(now)"
molecule test -s "${scenario}" 2>&1 | tee "${log}"
scenario_s="$(since "${t1}")"

# Molecule reports a sequence step whose playbook it cannot find as
# "Missing playbook" and carries on: never count such a run as a pass.
if grep -q 'Missing playbook' "${log}"; then
    say "FAILED: molecule skipped a step of ${scenario} (Missing playbook): see ${log}" >&2
    exit 1
fi
for proof in 'KVM guest reboot (down and back on SSH)' \
             'swap file on a filesystem too small for it: refused with' \
             "hugepages the guest's RAM cannot hold: refused with" \
             'NCCL variable name that is not NCCL_\*: refused with'; do
    if ! grep -q "${proof}" "${log}"; then
        say "FAILED: ${scenario} finished without '${proof}' in its output: see ${log}" >&2
        exit 1
    fi
done

boot_s="$(sed -n 's/.*KVM guest boot (QEMU start to SSH banner): \([0-9.]*\) s.*/\1/p' "${log}" | tail -n1)"
accel="$(sed -n 's/.*; accelerator \([a-z]*\);.*/\1/p' "${log}" | tail -n1)"
reboot_s="$(sed -n 's/.*KVM guest reboot (down and back on SSH): \([0-9.]*\) s.*/\1/p' "${log}" | tail -n1)"
say "PASSED: molecule scenario ${scenario}"
say "accelerator: ${accel:-?}$([ "${accel}" = tcg ] && printf ' (software emulation; see molecule/kvm_host_tuning/create.yml)')"
say "timings: image ${image_s} s this run (cached image built in ${built_s} s; ${image_dir}), guest boot ${boot_s:-?} s, guest reboot ${reboot_s:-?} s, scenario ${scenario_s} s"
rm -f "${log}"
