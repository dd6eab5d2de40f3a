#!/usr/bin/env bash
# Headless Chromium for the MLflow UI tests (tests/test_mlflow_ui.py): Debian's chromium + chromium-driver,
# installed when missing (~20 s; root and Debian's mirrors needed). It never fails the test command: without a
# browser those tests skip and say why.
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
        >/tmp/artsweep-browser-install.log 2>&1; then
    echo "installed Debian's chromium and chromium-driver for the MLflow UI tests"
else
    echo "could not install chromium + chromium-driver (see /tmp/artsweep-browser-install.log): the MLflow UI tests will skip"
fi
exit 0
