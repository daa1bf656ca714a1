#!/bin/sh
# Install soci-ts: picks the binary for this machine, checks it against SHA256SUMS, installs it.
#
#   curl -fsSL <release-url>/install.sh | sh
#   curl -fsSL <release-url>/install.sh | SOCI_TS_BASE_URL=<release-url> PREFIX=$HOME/.local sh
#   sh install.sh [BASE_URL]
#
# BASE_URL is where the release's files are (http(s):// or file://); a release build stamps its own URL in.
# PREFIX defaults to /usr/local (the binary goes to $PREFIX/bin/soci-ts).
set -eu

BASE_URL="${1:-${SOCI_TS_BASE_URL:-@BASE_URL@}}"
PREFIX="${PREFIX:-/usr/local}"

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

mkdir -p "$PREFIX/bin" || fail "cannot create $PREFIX/bin"
install -m 0755 "$tmp/$name" "$PREFIX/bin/soci-ts.new" || fail "cannot write to $PREFIX/bin (run as root or set PREFIX)"
mv -f "$PREFIX/bin/soci-ts.new" "$PREFIX/bin/soci-ts"
echo "Installed $("$PREFIX/bin/soci-ts" --version) to $PREFIX/bin/soci-ts"
