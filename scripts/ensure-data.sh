#!/usr/bin/env bash
# Make sure the Fashion-MNIST IDX files are present: $DIFFGUARD_DATA_ROOT if set, else Debian's
# dataset-fashion-mnist (installed here when missing and this process may install packages).
set -euo pipefail
root="${DIFFGUARD_DATA_ROOT:-/usr/share/datasets/fashion-mnist}"
have() { ls "$root"/t10k-images-idx3-ubyte* >/dev/null 2>&1; }
have && exit 0
if [ -n "${DIFFGUARD_DATA_ROOT:-}" ]; then
  echo "diffguard: no Fashion-MNIST IDX files in DIFFGUARD_DATA_ROOT=$root" >&2; exit 1
fi
sudo=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null && sudo="sudo -n"
if [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; then
  echo "diffguard: installing Debian package dataset-fashion-mnist ..." >&2
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
  have && exit 0
fi
cat >&2 <<MSG
diffguard: Fashion-MNIST not found in $root.
  Install Debian's package:   sudo apt-get install dataset-fashion-mnist
  or point diffguard at a folder with the four IDX files (train/t10k images and labels, raw or .gz):
    export DIFFGUARD_DATA_ROOT=/path/to/folder    (or pass --data-root /path/to/folder to each command)
MSG
exit 1
