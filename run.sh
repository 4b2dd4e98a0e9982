#!/usr/bin/env bash
# The project's two entry points, for a fresh Debian machine with Python 3:
#
#   ./run.sh demo          RedBeat dispatching real tasks to a real worker, on a
#                          throwaway redis-server it starts and stops itself,
#                          with the dashboard served at the address it prints
#   ./run.sh test [ARGS]   the whole test suite (ARGS go to pytest)
#   ./run.sh bench [ARGS]  the benchmark (bench/run.py --help), written to docs/benchmarks.md
#   ./run.sh screenshots   the dashboard's screenshots in docs/images/, taken in headless chromium
#
# Each installs what it needs: a virtualenv in .venv with the package and its
# test tools, and redis-server through apt-get when it is missing and we are root.
set -euo pipefail
cd "$(dirname "$0")"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        log "missing: $*; install them (sudo apt-get install $*) and run again"
        exit 1
    fi
    log "installing $* with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null
    apt-get install -y -qq "$@" </dev/null >/dev/null
}

ensure_redis() {
    local missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v redis-cli >/dev/null || missing+=(redis-tools)
    if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
}

# The dashboard's browser tests drive Debian's headless chromium through its chromedriver.
ensure_chromium() {
    local missing=()
    command -v chromium >/dev/null || missing+=(chromium)
    command -v chromedriver >/dev/null || missing+=(chromium-driver)
    if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
}

ensure_venv() {
    if [ ! -x .venv/bin/python ]; then
        log "creating the virtualenv .venv"
        if ! python3 -m venv .venv 2>/dev/null; then
            rm -rf .venv
            apt_install python3-venv
            python3 -m venv .venv
        fi
    fi
    # Reinstall only when the declared requirements change.
    local stamp=.venv/.redbeat-installed want
    want=$(cat pyproject.toml requirements.dev.txt | sha256sum | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        log "installing RedBeat and its test tools into .venv"
        if ! { .venv/bin/python -m pip install -q --upgrade pip &&
               .venv/bin/python -m pip install -q -e . -r requirements.dev.txt; } </dev/null >.venv/install.log 2>&1; then
            cat .venv/install.log >&2
            exit 1
        fi
        echo "$want" > "$stamp"
    fi
}

run_tests() {
    ensure_redis
    ensure_chromium
    ensure_venv
    log "ruff"
    .venv/bin/ruff check redbeat tests exampleconf.py demo bench
    log "mypy"
    .venv/bin/mypy
    log "pytest"
    exec .venv/bin/python -m pytest "$@"
}

run_bench() {
    ensure_redis
    ensure_venv
    exec .venv/bin/python bench/run.py "$@"
}

# The browser test that writes docs/images/ runs only when asked: CI never rewrites tracked files.
run_screenshots() {
    ensure_redis
    ensure_chromium
    ensure_venv
    REDBEAT_SCREENSHOTS=1 exec .venv/bin/python -m pytest -q tests/test_dashboard_browser.py -k screenshots
}

run_demo() {
    ensure_redis
    ensure_venv
    exec .venv/bin/python demo/run_demo.py "$@"
}

case "${1:-}" in
    test) shift; run_tests "$@" ;;
    demo) shift; run_demo "$@" ;;
    bench) shift; run_bench "$@" ;;
    screenshots) shift; run_screenshots ;;
    *) echo "usage: $0 demo | test [pytest arguments] | bench [--compare] [--quick] | screenshots" >&2; exit 2 ;;
esac
