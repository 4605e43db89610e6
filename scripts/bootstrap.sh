#!/usr/bin/env bash
# Set up Kerani on a fresh Debian machine: system packages (Tesseract, poppler, fonts; with
# --dev also Chromium for the browser tests), a virtual environment in .venv, the package.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1

need=()
command -v tesseract >/dev/null || need+=(tesseract-ocr tesseract-ocr-eng tesseract-ocr-msa)
if command -v tesseract >/dev/null && ! tesseract --list-langs 2>/dev/null | grep -qx msa; then
  need+=(tesseract-ocr-msa)
fi
command -v pdftoppm >/dev/null || need+=(poppler-utils)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
if [ "$dev" = 1 ]; then
  [ -x /usr/bin/chromium ] || need+=(chromium)
  ldconfig -p | grep -q "libGL.so.1 " || need+=(libgl1)
  ldconfig -p | grep -q "libgthread-2.0.so.0 " || need+=(libglib2.0-0)
fi
if [ "${#need[@]}" -gt 0 ]; then
  echo "Installing Debian packages: ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
extra=""
# The tests also run the optional second OCR engine (RapidOCR, whose OpenCV needs libGL).
[ "$dev" = 1 ] && extra="[dev]"
.venv/bin/python -m pip install -q -e ".${extra}"
