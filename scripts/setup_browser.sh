#!/usr/bin/env bash
# What the playground's browser test (tests/test_serve_browser.py) needs: Debian's Chromium at
# /usr/bin/chromium, and the Python `playwright` package (its driver only, never `playwright install`,
# which downloads a browser build of its own). playwright is in the dev extra, so scripts/setup.sh
# installs it; this script installs it too when .venv already exists. Tolerates failure: it prints
# why and exits 0, and the browser test then skips with a message.
cd "$(dirname "$0")/.." || exit 0
say() { echo "setup_browser: $*" >&2; }
if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
      || say "could not install chromium with apt-get; the browser test will be skipped"
  else
    say "no /usr/bin/chromium, and no root apt-get to install it; the browser test will be skipped"
  fi
fi
if [ -x .venv/bin/python ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt 'playwright>=1.40,<2' \
    || say "could not install the playwright package; the browser test will be skipped"
fi
exit 0
