#!/usr/bin/env sh
# Install Chromium and its WebDriver for the viewer's browser test (tests/viewer_test.py), from
# Debian / Ubuntu packages. Does nothing when both are already installed; where they cannot be
# installed (no apt-get, no root and no sudo, no network) it says so and exits 0: the browser
# test is then skipped with that reason, and the rest of the suite runs.
#
#   sh launch/install_chromium.sh
if command -v chromedriver >/dev/null 2>&1 && \
   { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
     command -v google-chrome >/dev/null 2>&1; }; then
  exit 0
fi
skip() {
  echo "install_chromium: $1; the viewer's browser test will be skipped" >&2
  exit 0
}
command -v apt-get >/dev/null 2>&1 || skip "no apt-get (install Chromium and chromedriver yourself)"
if [ "$(id -u)" = 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  skip "installing packages needs root (run: sudo apt-get install chromium chromium-driver)"
fi
# Debian names the packages chromium / chromium-driver; Ubuntu chromium-browser /
# chromium-chromedriver.
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null 2>&1 || skip "apt-get update failed"
$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
  $SUDO apt-get install -y -qq chromium-browser chromium-chromedriver >/dev/null 2>&1 || \
  skip "apt-get could not install chromium and chromium-driver"
echo "install_chromium: installed $(chromium --version 2>/dev/null || chromium-browser --version)"
