#!/usr/bin/env bash
# What the tests need from Debian, installed when missing (root and Debian's mirrors needed; ~1 min the first time):
#   chromium + chromium-driver   the MLflow UI tests (tests/test_mlflow_ui.py, driven by Selenium); without them
#                                those tests skip and say why
#   postgresql                   the tracking stack tests (tests/tracking_stack.py: initdb, pg_ctl, postgres under
#                                /usr/lib/postgresql/N/bin, started by the tests in a temp folder, never the package's
#                                own service) and benchmarks/tracking_load.py; without it those tests fail saying so
# It never fails the test command: what it could not install is named, with its log.
missing=()
{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || missing+=(chromium chromium-driver)
{ command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; } || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0
log=/tmp/artsweep-services-install.log
if { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >"$log" 2>&1; then
    echo "installed Debian's ${missing[*]} for the tests"
else
    echo "could not install ${missing[*]} (see $log): the MLflow UI tests will skip, the tracking stack tests fail"
fi
exit 0
