#!/bin/sh
# Install soci-ts: picks the binary for this machine, checks it against SHA256SUMS, installs it.
#
#   curl -fsSL <release-url>/install.sh | sh
#   curl -fsSL <release-url>/install.sh | SOCI_TS_BASE_URL=<release-url> PREFIX=$HOME/.local sh
#   sh install.sh [--systemd] [BASE_URL]
#
# BASE_URL is where the release's files are (http(s):// or file://); a release build stamps its own URL in.
# PREFIX defaults to /usr/local (the binary goes to $PREFIX/bin/soci-ts).
# --systemd also installs the daemon as a systemd service: the release's soci-ts.service (ExecStart pointing at
# the binary installed) in $SYSTEMD_UNIT_DIR (default /etc/systemd/system), and a default config in
# $CONFIG_DIR/config.toml (default /etc/soci-ts; an existing one is kept), then enables the unit when systemctl is
# there. It does not start it: configure containerd first (README "Running it as a node service").
# DESTDIR installs into another root (an image being built, a package's staging tree): every file goes under
# $DESTDIR, the paths written into the unit are those of the target, and the unit is enabled there with
# `systemctl --root=$DESTDIR enable` (no running systemd needed).
set -eu

SYSTEMD=""
if [ "${1:-}" = "--systemd" ]; then
  SYSTEMD=1
  shift
fi
BASE_URL="${1:-${SOCI_TS_BASE_URL:-@BASE_URL@}}"
PREFIX="${PREFIX:-/usr/local}"
SYSTEMD_UNIT_DIR="${SYSTEMD_UNIT_DIR:-/etc/systemd/system}"
CONFIG_DIR="${CONFIG_DIR:-/etc/soci-ts}"
DESTDIR="${DESTDIR:-}"
DESTDIR="${DESTDIR%/}"

fail() {
  echo "soci-ts install: $*" >&2
  exit 1
}

case "$BASE_URL" in
  @BASE_URL*) fail "no release URL: pass it as the first argument or set SOCI_TS_BASE_URL" ;;
esac
BASE_URL="${BASE_URL%/}"

case "$(uname -s)" in
  Linux) ;;
  *) fail "soci-ts runs on Linux only, not $(uname -s)" ;;
esac

case "$(uname -m)" in
  x86_64 | amd64) arch=x64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) fail "no soci-ts build for CPU $(uname -m) (there are x86_64 and aarch64 builds)" ;;
esac

libc=""
if ls /lib/ld-musl-* >/dev/null 2>&1 || (ldd --version 2>&1 | grep -qi musl); then
  libc="-musl"
fi
name="soci-ts-linux-${arch}${libc}"

fetch() { # fetch URL FILE
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL --retry 3 -o "$2" "$1" || return 1
  elif command -v wget >/dev/null 2>&1; then
    case "$1" in
      file://*) cp "${1#file://}" "$2" || return 1 ;;
      *) wget -q -O "$2" "$1" || return 1 ;;
    esac
  else
    fail "neither curl nor wget is installed"
  fi
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT INT TERM

echo "Downloading $name from $BASE_URL"
fetch "$BASE_URL/SHA256SUMS" "$tmp/SHA256SUMS" || fail "cannot download $BASE_URL/SHA256SUMS"
if ! grep -q "  ${name}\$" "$tmp/SHA256SUMS" && [ -n "$libc" ]; then
  echo "No musl build in this release; trying the glibc one" >&2
  name="soci-ts-linux-${arch}"
fi
grep "  ${name}\$" "$tmp/SHA256SUMS" >"$tmp/sum" || fail "$name is not listed in $BASE_URL/SHA256SUMS"
fetch "$BASE_URL/$name" "$tmp/$name" || fail "cannot download $BASE_URL/$name"

if command -v sha256sum >/dev/null 2>&1; then
  (cd "$tmp" && sha256sum -c sum >/dev/null 2>&1) || fail "checksum mismatch for $name: the download is corrupt or was tampered with"
else
  fail "sha256sum is needed to check the download"
fi

bin="$DESTDIR$PREFIX/bin"
mkdir -p "$bin" || fail "cannot create $bin"
install -m 0755 "$tmp/$name" "$bin/soci-ts.new" || fail "cannot write to $bin (run as root or set PREFIX)"
mv -f "$bin/soci-ts.new" "$bin/soci-ts"
echo "Installed $("$bin/soci-ts" --version) to $bin/soci-ts"

[ -n "$SYSTEMD" ] || exit 0
fetch "$BASE_URL/soci-ts.service" "$tmp/soci-ts.service" || fail "cannot download $BASE_URL/soci-ts.service"
units="$DESTDIR$SYSTEMD_UNIT_DIR"
mkdir -p "$units" || fail "cannot create $units"
sed "s#^ExecStart=/usr/local/bin/soci-ts #ExecStart=$PREFIX/bin/soci-ts #; s#--config /etc/soci-ts/config.toml#--config $CONFIG_DIR/config.toml#" \
  "$tmp/soci-ts.service" >"$units/soci-ts.service" || fail "cannot write $units/soci-ts.service"
echo "Installed $units/soci-ts.service"
config="$DESTDIR$CONFIG_DIR"
mkdir -p "$config" || fail "cannot create $config"
if [ -e "$config/config.toml" ]; then
  echo "Kept the existing $config/config.toml"
else
  "$bin/soci-ts" config default >"$config/config.toml.new" || fail "cannot write $config/config.toml"
  mv -f "$config/config.toml.new" "$config/config.toml"
  echo "Wrote the default configuration to $config/config.toml"
fi
if [ -n "$DESTDIR" ]; then
  command -v systemctl >/dev/null 2>&1 || fail "systemctl is needed to enable soci-ts.service under $DESTDIR"
  systemctl --root="$DESTDIR" enable soci-ts.service || fail "cannot enable soci-ts.service under $DESTDIR"
  echo "Enabled soci-ts.service under $DESTDIR"
elif command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl daemon-reload && systemctl enable soci-ts.service || fail "cannot enable soci-ts.service"
  echo "Enabled soci-ts.service; start it with: systemctl start soci-ts"
else
  echo "systemd is not running here: enable the unit with systemctl enable soci-ts.service where it is"
fi
