#!/usr/bin/env bash
# PostgreSQL for the tracking stack tests (tests/tracking_stack.py, tests/test_tracking_stack_e2e.py) and
# benchmarks/tracking_load.py: Debian's `postgresql` (initdb, pg_ctl, postgres under /usr/lib/postgresql/N/bin),
# installed when missing (~30 s; root and Debian's mirrors needed). The tests start their own server in a temp
# folder as the `postgres` user; the package's own cluster service is not used. It never fails the test
# command: without PostgreSQL those tests fail saying to run this script.
if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    exit 0
fi
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    exit 0
fi
if { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } \
        >/tmp/artsweep-services-install.log 2>&1; then
    echo "installed Debian's postgresql for the tracking stack tests"
else
    echo "could not install postgresql (see /tmp/artsweep-services-install.log): the tracking stack tests will fail"
fi
exit 0
