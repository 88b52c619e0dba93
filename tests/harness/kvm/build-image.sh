#!/usr/bin/env bash
# Build (or reuse) the Debian 12 guest image for the KVM test scenarios.
#
# Output, in a cache directory keyed on a hash of this script and its inputs:
#   rootfs.qcow2  ext4 filesystem image (no partition table; root=/dev/vda),
#                 8 GiB virtual size, sparse
#   vmlinuz       the guest's own kernel, for qemu -kernel
#   initrd.img    the guest's own initramfs, for qemu -initrd
#   build-info    what was built, from what, and how long it took
# The last line on stdout is the cache directory; all logging goes to stderr.
#
# No loop devices and no mounts: debootstrap writes a directory tree and
# mkfs.ext4 -d turns it into a filesystem image.
#
# The guest has no credentials baked in. At boot, llm-onprem-kvm-seed.service
# reads a base64-encoded public key from the kernel command line
# (llm_onprem.ssh_authorized_key=...) into /root/.ssh/authorized_keys and
# generates the guest's SSH host keys, so a per-run key never requires
# rebuilding the image.
#
# Environment:
#   LLM_ONPREM_KVM_CACHE   cache root (default: <repo>/.cache/kvm)
#   LLM_ONPREM_KVM_MIRROR  Debian mirror (default: http://deb.debian.org/debian)
#   LLM_ONPREM_KVM_REBUILD set to 1 to ignore a cached image
set -euo pipefail

script_path="$(readlink -f "${BASH_SOURCE[0]}")"
repo_root="$(cd "$(dirname "${script_path}")/../../.." && pwd)"

suite="bookworm"
mirror="${LLM_ONPREM_KVM_MIRROR:-http://deb.debian.org/debian}"
disk_size="8G"
packages="linux-image-amd64,systemd,systemd-sysv,udev,dbus,openssh-server,python3,sudo,iproute2,procps,kmod,ca-certificates"
cache_root="${LLM_ONPREM_KVM_CACHE:-${repo_root}/.cache/kvm}"

log() { printf '[build-image] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

# The key covers everything that shapes the image: this script (which holds
# the package list and every guest file) plus the inputs that can be
# overridden from the environment.
key="$(
    {
        sha256sum "${script_path}" | cut -d' ' -f1
        printf '%s\n' "${suite}" "${mirror}" "${disk_size}" "${packages}"
    } | sha256sum | cut -c1-16
)"
image_dir="${cache_root}/debian12-${key}"

if [ -f "${image_dir}/build-info" ] && [ "${LLM_ONPREM_KVM_REBUILD:-0}" != "1" ]; then
    log "reusing cached image ${image_dir}"
    printf '%s\n' "${image_dir}"
    exit 0
fi

# Tools this script needs on the host, installed only when missing.
missing=()
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
command -v qemu-img >/dev/null 2>&1 || missing+=(qemu-utils)
command -v mkfs.ext4 >/dev/null 2>&1 || [ -x /usr/sbin/mkfs.ext4 ] || missing+=(e2fsprogs)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2 \
        || { as_root apt-get update >&2 && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
fi

mkdir -p "${cache_root}"
# One builder at a time per cache; a second caller waits, then reuses.
exec 9>"${cache_root}/.build.lock"
flock 9
if [ -f "${image_dir}/build-info" ] && [ "${LLM_ONPREM_KVM_REBUILD:-0}" != "1" ]; then
    log "reusing image built by a concurrent run: ${image_dir}"
    printf '%s\n' "${image_dir}"
    exit 0
fi

work="$(mktemp -d "${cache_root}/.build.XXXXXX")"
cleanup() { as_root rm -rf --one-file-system "${work}"; }
trap cleanup EXIT
root="${work}/rootfs"
start="$(date +%s)"

log "debootstrap ${suite} from ${mirror} (minbase + ${packages})"
as_root debootstrap --variant=minbase --include="${packages}" \
    "${suite}" "${root}" "${mirror}" >"${work}/debootstrap.log" 2>&1 \
    || { tail -n 40 "${work}/debootstrap.log" >&2; exit 1; }
boot_done="$(date +%s)"

# Guest configuration: written as root into the tree.
put() {  # put MODE PATH  (content on stdin)
    as_root install -D -m "$1" -o root -g root /dev/stdin "${root}$2"
}

printf 'kvm-guest\n' | put 0644 /etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\tkvm-guest\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
    | put 0644 /etc/hosts
printf '# <fs> <mountpoint> <type> <options> <dump> <pass>\n/dev/vda / ext4 rw,errors=remount-ro 0 1\n' \
    | put 0644 /etc/fstab
# A fresh machine-id per guest, created on first boot.
: | put 0444 /etc/machine-id

# DHCP on QEMU user networking (slirp answers on 10.0.2.2).
put 0644 /etc/systemd/network/20-dhcp.network <<'UNIT'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
UNIT

put 0644 /etc/ssh/sshd_config.d/10-llm-onprem-kvm.conf <<'CONF'
# Test guest: key-only root login, reached over a forwarded 127.0.0.1 port.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
CONF

put 0755 /usr/local/sbin/llm-onprem-kvm-seed <<'SEED'
#!/bin/sh
# Install the per-run SSH key passed on the kernel command line and make
# sure the guest has its own SSH host keys.
set -eu
key=""
for arg in $(cat /proc/cmdline); do
    case "${arg}" in
        llm_onprem.ssh_authorized_key=*) key="${arg#*=}" ;;
    esac
done
if [ -n "${key}" ]; then
    install -d -m 0700 -o root -g root /root/.ssh
    printf '%s' "${key}" | base64 -d >/root/.ssh/authorized_keys.new
    chmod 0600 /root/.ssh/authorized_keys.new
    mv /root/.ssh/authorized_keys.new /root/.ssh/authorized_keys
fi
ssh-keygen -A
SEED

put 0644 /etc/systemd/system/llm-onprem-kvm-seed.service <<'UNIT'
[Unit]
Description=Install the test run's SSH key from the kernel command line
Before=ssh.service
ConditionPathExists=/proc/cmdline

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/llm-onprem-kvm-seed

[Install]
RequiredBy=ssh.service
UNIT

# Shared host keys would make every guest look alike: generated at boot.
as_root find "${root}/etc/ssh" -maxdepth 1 -name 'ssh_host_*' -delete
as_root chroot "${root}" systemctl enable systemd-networkd.service llm-onprem-kvm-seed.service ssh.service >&2
# Nothing in the guest waits for "online"; keep boot short.
as_root chroot "${root}" systemctl mask systemd-networkd-wait-online.service >&2
# Serial console on ttyS0 is spawned by systemd's getty generator from
# console=ttyS0; make the target explicit so the login prompt is on the log.
as_root chroot "${root}" systemctl enable serial-getty@ttyS0.service >&2

as_root chroot "${root}" apt-get clean
as_root rm -rf "${root}/var/lib/apt/lists/"* "${root}/var/cache/apt/"*.bin "${root}/tmp/"* "${root}/var/log/"*.log

# The kernel and initramfs are booted directly by qemu.
kver="$(as_root sh -c "ls '${root}/boot/' | sed -n 's/^vmlinuz-//p' | sort -V | tail -n1")"
[ -n "${kver}" ] || { log "no kernel found in ${root}/boot"; exit 1; }
as_root install -m 0644 -o "$(id -u)" -g "$(id -g)" "${root}/boot/vmlinuz-${kver}" "${work}/vmlinuz"
as_root install -m 0644 -o "$(id -u)" -g "$(id -g)" "${root}/boot/initrd.img-${kver}" "${work}/initrd.img"

log "mkfs.ext4 -d (${disk_size}, sparse)"
truncate -s "${disk_size}" "${work}/rootfs.raw"
as_root mkfs.ext4 -q -F -L llm-onprem-root -E root_owner=0:0 -d "${root}" "${work}/rootfs.raw" >&2
as_root chown "$(id -u):$(id -g)" "${work}/rootfs.raw"
qemu-img convert -f raw -O qcow2 "${work}/rootfs.raw" "${work}/rootfs.qcow2"
rm -f "${work}/rootfs.raw"
end="$(date +%s)"

{
    printf 'key=%s\nsuite=%s\nmirror=%s\npackages=%s\nkernel=%s\n' \
        "${key}" "${suite}" "${mirror}" "${packages}" "${kver}"
    printf 'built_at=%s\ndebootstrap_seconds=%s\nbuild_seconds=%s\n' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$((boot_done - start))" "$((end - start))"
} >"${work}/build-info"

mkdir -p "${image_dir}"
mv "${work}/vmlinuz" "${work}/initrd.img" "${work}/rootfs.qcow2" "${image_dir}/"
mv "${work}/build-info" "${image_dir}/build-info"
log "built ${image_dir} in $((end - start)) s (debootstrap $((boot_done - start)) s, kernel ${kver})"
# Older builds of other keys are left for the operator; they are listed here.
find "${cache_root}" -mindepth 1 -maxdepth 1 -type d -name 'debian12-*' ! -path "${image_dir}" -printf '[build-image] stale cache: %p\n' >&2
printf '%s\n' "${image_dir}"
