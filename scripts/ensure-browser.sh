#!/usr/bin/env bash
# Make sure headless Chromium and its WebDriver are present for the report test (tests/test_report_browser.py):
# Debian's chromium and chromium-driver, installed here when missing and this process may install packages.
# Where they cannot be installed, the test skips, except under CI=true where it fails; so this script fails there too.
set -euo pipefail
have() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }
have && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null && sudo="sudo -n"
if [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; then
  echo "diffguard: installing Debian packages chromium chromium-driver (for the HTML report test) ..." >&2
  $sudo apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
  have && exit 0
fi
cat >&2 <<MSG
diffguard: chromium and chromedriver not found; the HTML report browser test will be skipped.
  Install Debian's packages:   sudo apt-get install chromium chromium-driver
MSG
[ -n "${CI:-}" ] && exit 1
exit 0
