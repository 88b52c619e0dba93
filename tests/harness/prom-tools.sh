#!/bin/sh
# Fetch promtool, amtool, the blackbox exporter and mtail for the unit tests
# without installing Debian's packages (their postinst would start daemons on
# this machine): apt-get download the pinned .debs into .cache/prom-tools/
# and unpack them with dpkg-deb -x. Prints "promtool=PATH", "amtool=PATH",
# "blackbox=PATH" and "mtail=PATH" on stdout.
# Usage: tests/harness/prom-tools.sh   (rerun: reuses what is unpacked)
# Versions: LLM_ONPREM_PROMETHEUS_VERSION / LLM_ONPREM_ALERTMANAGER_VERSION,
# default the role's pins (roles/monitoring/defaults/main.yml).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
dir="$root/.cache/prom-tools"
defaults="$root/roles/monitoring/defaults/main.yml"
pin() { sed -n "s/^$1: *\"\{0,1\}\([^\"]*\)\"\{0,1\} *$/\1/p" "$defaults"; }
prom_version=${LLM_ONPREM_PROMETHEUS_VERSION:-$(pin monitoring_prometheus_version)}
am_version=${LLM_ONPREM_ALERTMANAGER_VERSION:-$(pin monitoring_alertmanager_version)}
bb_version=$(pin monitoring_blackbox_exporter_version)
mtail_version=$(pin monitoring_mtail_version)
stamp="$dir/root/.versions"
want="prometheus=$prom_version prometheus-alertmanager=$am_version prometheus-blackbox-exporter=$bb_version mtail=$mtail_version"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    rm -rf "$dir"
    mkdir -p "$dir/debs" "$dir/root"
    cd "$dir/debs"
    # shellcheck disable=SC2086
    if ! apt-get download $want >&2; then
        echo "apt-get download failed; running apt-get update first" >&2
        if [ "$(id -u)" -eq 0 ]; then apt-get update >&2; else sudo -n apt-get update >&2; fi
        # shellcheck disable=SC2086
        apt-get download $want >&2
    fi
    for deb in ./*.deb; do dpkg-deb -x "$deb" "$dir/root"; done
    echo "$want" > "$stamp"
fi
for tool in promtool amtool blackbox=prometheus-blackbox-exporter mtail; do
    name=${tool%%=*} binary=${tool#*=}
    test -x "$dir/root/usr/bin/$binary" || { echo "$binary missing from the unpacked packages in $dir" >&2; exit 1; }
    echo "$name=$dir/root/usr/bin/$binary"
done
