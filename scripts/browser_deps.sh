#!/usr/bin/env bash
# What the browser tests (tests/browser/) need: Debian's chromium (driven by Playwright; never
# `playwright install`) and the fonts that make screenshots readable (emoji for the ✅ ❌ ⏰ stage marks, a
# CJK font for the Chinese views). Installed with apt-get when running as root; otherwise one line says how.
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
for pkg in fonts-noto-color-emoji fonts-wqy-microhei; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
[ "${#need[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "error: the browser tests need ${need[*]}: run 'sudo apt-get install -y ${need[*]}' (or ./test.sh as root), then ./test.sh again" >&2
  exit 2
fi
echo "== installing ${need[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y "${need[@]}"
