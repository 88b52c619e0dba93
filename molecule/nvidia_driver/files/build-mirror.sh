#!/bin/sh
# Build and serve a signed local apt repository (flat layout, like NVIDIA's
# CUDA repository) from real Debian packages, on the mirror test container:
#   - branch 535 user-space driver packages from bookworm (the pinned branch),
#   - the same packages at branch 550 from trixie (newer: the pin must refuse them),
#   - nvidia-modprobe from both (an exact-version pin),
#   - the small glx helper packages they depend on.
# Signed with a throwaway key; served on port 8080 by a transient unit.
# Writes /srv/out/{key.asc,fingerprint,key.sha256,manifest.json}.
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
REPO=/srv/repo
OUT=/srv/out
systemctl stop llm-onprem-test-mirror.service 2>/dev/null || true
rm -rf "$REPO" "$OUT" /srv/gnupg
mkdir -p "$REPO" "$OUT"

cat >/etc/apt/sources.list.d/test-download.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
# Only downloads come from trixie: keep bookworm the default release.
echo 'APT::Default-Release "bookworm";' >/etc/apt/apt.conf.d/90-test-default-release
apt-get update -qq
apt-get install -y -qq --no-install-recommends gnupg apt-utils >/dev/null

cd "$REPO"
chown _apt "$REPO"
BOOKWORM="nvidia-smi libnvidia-ml1 nvidia-alternative nvidia-legacy-check nvidia-modprobe glx-alternative-nvidia glx-alternative-mesa glx-diversions update-glx nvidia-installer-cleanup"
TRIXIE="nvidia-smi libnvidia-ml1 nvidia-alternative nvidia-legacy-check nvidia-modprobe"
# shellcheck disable=SC2086
apt-get download -qq $BOOKWORM
for pkg in $TRIXIE; do apt-get download -qq "$pkg/trixie"; done

apt-ftparchive packages . >Packages
gzip -9kf Packages
apt-ftparchive -o APT::FTPArchive::Release::Origin=llm-onprem-test \
  -o APT::FTPArchive::Release::Label=llm-onprem-test release . >Release

export GNUPGHOME=/srv/gnupg
mkdir -p "$GNUPGHOME"; chmod 700 "$GNUPGHOME"
gpg --batch --pinentry-mode loopback --passphrase '' \
  --quick-gen-key 'llm-onprem test mirror <test@invalid>' rsa3072 sign never 2>/dev/null
gpg --batch --yes --clearsign -o InRelease Release
gpg --batch --yes -abs -o Release.gpg Release
gpg --armor --export >key.asc
cp key.asc "$OUT/key.asc"
gpg --with-colons --fingerprint | awk -F: '/^fpr/ {print $10; exit}' >"$OUT/fingerprint"
sha256sum key.asc | cut -d' ' -f1 >"$OUT/key.sha256"

# package -> {bookworm: version, trixie: version}
python3 - "$OUT/manifest.json" <<'PY'
import glob, json, subprocess, sys
versions = {}
for deb in glob.glob("/srv/repo/*.deb"):
    name, ver = (subprocess.check_output(["dpkg-deb", "-f", deb, f]).decode().strip() for f in ("Package", "Version"))
    versions.setdefault(name, []).append(ver)
out = {}
for name, vers in versions.items():
    # The two versions of a package differ in their first number (the branch).
    vers.sort(key=lambda v: int(v.split(".")[0]) if v.split(".")[0].isdigit() else 0)
    out[name] = {"all": vers, "low": vers[0], "high": vers[-1]}
json.dump(out, open(sys.argv[1], "w"), indent=1, sort_keys=True)
PY

systemd-run --unit=llm-onprem-test-mirror --property=WorkingDirectory="$REPO" \
  python3 -m http.server 8080 --bind 0.0.0.0 >/dev/null
for _ in 1 2 3 4 5 6 7 8 9 10; do
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/InRelease')" 2>/dev/null && exit 0
  sleep 1
done
echo "the test mirror did not start" >&2
exit 1
