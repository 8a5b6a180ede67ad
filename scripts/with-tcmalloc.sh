#!/usr/bin/env bash
# Run a command with Debian's tcmalloc (libtcmalloc_minimal.so.4) preloaded when it is installed, else run it as is.
# The library is looked up when the command starts (after scripts/ensure-tcmalloc.sh may have installed it), not
# when make reads the Makefile. tcmalloc is a speed-up (torch's many small CPU allocations), never a requirement.
#   scripts/with-tcmalloc.sh CMD [ARGS...]   run CMD with LD_PRELOAD extended by the library
#   scripts/with-tcmalloc.sh --path          print the library's path; exit 1 when it is not installed
# DIFFGUARD_TCMALLOC=0 turns the preload off.
set -euo pipefail
lib() {
  local p
  for p in /usr/lib/*/libtcmalloc_minimal.so.4 /usr/lib64/libtcmalloc_minimal.so.4 /usr/lib/libtcmalloc_minimal.so.4; do
    [ -e "$p" ] && { echo "$p"; return 0; }
  done
  p=$(ldconfig -p 2>/dev/null | awk '/libtcmalloc_minimal\.so\.4 /{print $NF; exit}')
  [ -n "$p" ] && [ -e "$p" ] && { echo "$p"; return 0; }
  return 1
}
if [ "${1:-}" = "--path" ]; then lib; exit; fi
[ $# -gt 0 ] || { echo "usage: $0 CMD [ARGS...] | --path" >&2; exit 2; }
if [ "${DIFFGUARD_TCMALLOC:-1}" != "0" ] && [[ "${LD_PRELOAD:-}" != *tcmalloc* ]] && l=$(lib); then
  export LD_PRELOAD="$l${LD_PRELOAD:+:$LD_PRELOAD}"
fi
exec "$@"
