#!/usr/bin/env bash
# Make sure Debian's tcmalloc (libtcmalloc_minimal.so.4) is present: the Makefile's long jobs preload it through
# scripts/with-tcmalloc.sh (torch on CPU makes many small allocations; see docs/speed.md). Installed here when
# missing and this process may install packages; otherwise prints how and carries on: tcmalloc is a speed-up, not a
# requirement, so this script never fails. DIFFGUARD_TCMALLOC=0 skips it (and the preload).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
have() { bash "$here/with-tcmalloc.sh" --path >/dev/null 2>&1; }
[ "${DIFFGUARD_TCMALLOC:-1}" = "0" ] && exit 0
have && exit 0
# The package's name: libtcmalloc-minimal4 (Debian 12, Ubuntu 22.04), libtcmalloc-minimal4t64 (Debian 13, Ubuntu 24.04).
pkg() {
  local p
  for p in libtcmalloc-minimal4t64 libtcmalloc-minimal4; do
    apt-cache show "$p" >/dev/null 2>&1 && { echo "$p"; return 0; }
  done
  return 1
}
sudo=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null && sudo="sudo -n"
if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; }; then
  try_install() {
    local p
    p=$(pkg) || return 1
    echo "diffguard: installing Debian package $p (tcmalloc, a speed-up for CPU runs) ..." >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -o DPkg::Lock::Timeout=120 "$p" >/dev/null
  }
  # Without the package lists (a fresh image) or with stale ones, refresh them once and try again.
  try_install || { $sudo apt-get update -qq -o DPkg::Lock::Timeout=120 && try_install; }
  have && exit 0
fi
cat >&2 <<MSG
diffguard: tcmalloc (libtcmalloc_minimal.so.4) not found; continuing without it (CPU runs may be slower).
  Install Debian's package:   sudo apt-get install libtcmalloc-minimal4    (libtcmalloc-minimal4t64 on Debian 13 / Ubuntu 24.04)
MSG
exit 0
