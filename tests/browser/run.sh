#!/usr/bin/env bash
# shellcheck disable=SC2317  # trap handlers are called indirectly
# tests/browser/run.sh — the real-browser tests: Debian's Chromium, driven by
# playwright-core from `node --test`, against a real `gatehouse serve`.
#
#   tests/browser/run.sh [FILE.test.mjs...]     (default: every *.test.mjs here)
#
# Uses the binaries in target/debug (build them first: cargo build --workspace --bins;
# GATEHOUSE_BIN_DIR=target/release to use others). It never runs cargo.
#
# Postgres and Redis: when GATEHOUSE_TEST_DATABASE_URL and GATEHOUSE_TEST_REDIS_URL are
# set (scripts/test sets them), their servers are used; otherwise this script starts its
# own on free loopback ports in a temp dir. Either way the run gets a fresh database
# (gh_browser_<random>, dropped afterwards) and its own Redis key prefix (its keys are
# deleted afterwards), so it never meets another test's data.
#
# Then: migrate, bootstrap --demo with passwords chosen here (handed to the tests in
# GH_DEMO_PASSWORD), a demo-upstream whose origin is added to tenant acme's allowed
# return_to origins, `gatehouse serve` on a free port, and `node --test` (one test file
# at a time). Installs chromium with apt when /usr/bin/chromium is missing and runs
# `npm ci` when node_modules is missing or package-lock.json changed since.
# Everything it started is stopped on exit. Exit status: the tests'.
#
# The gateway serves the demo's orders app both ways: on its own origin
# (http://orders.localhost:PORT, GATEHOUSE_PROXY_LISTEN; handed to the tests in
# GH_APPS_ORIGIN) and under /svc/orders (GATEHOUSE_PROXY_SAME_ORIGIN=true).
#
# Environment: GATEHOUSE_BIN_DIR, CHROMIUM (default /usr/bin/chromium),
# GH_BROWSER_TIMEOUT (whole node run, seconds, default 600), GH_BROWSER_HEADED=1 (show
# the browser; needs a display). On failure, screenshots and page HTML are left in
# tests/browser/test-results/ and the gateway log is copied there.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=../../scripts/lib/services.sh
. "$REPO/scripts/lib/services.sh"

BIN_DIR="${GATEHOUSE_BIN_DIR:-$REPO/target/debug}"
[[ "$BIN_DIR" == /* ]] || BIN_DIR="$REPO/$BIN_DIR"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
TEST_TIMEOUT="${GH_BROWSER_TIMEOUT:-600}"
RESULTS="$HERE/test-results"
export PGCONNECT_TIMEOUT=10 # every psql below is bounded by it (and by statement speed)

# --- preflight: binaries, node, chromium, node_modules -----------------------------------

for b in gatehouse demo-upstream; do
  if [[ ! -x "$BIN_DIR/$b" ]]; then
    gh_err "$BIN_DIR/$b not found: build it first (cargo build --workspace --bins)"
    exit 1
  fi
done

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  gh_err "node and npm are needed (Node.js 20 or later)"
  exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if ((node_major < 20)); then
  gh_err "Node.js 20 or later is needed (found $(node --version))"
  exit 1
fi

gh_ensure_command curl
if [[ ! -x "$CHROMIUM" ]]; then
  if [[ "$CHROMIUM" != /usr/bin/chromium ]]; then
    gh_err "CHROMIUM=$CHROMIUM is not an executable"
    exit 1
  fi
  gh_log "$CHROMIUM is missing; installing Debian's chromium"
  gh_apt_install chromium
  [[ -x "$CHROMIUM" ]] || { gh_err "$CHROMIUM still missing after installing chromium"; exit 1; }
fi

# node_modules is stale when package-lock.json changed since the last `npm ci` here.
lock_sum="$(sha256sum "$HERE/package-lock.json" | cut -d' ' -f1)"
stamp="$HERE/node_modules/.gh-lock-sha256"
if [[ ! -d "$HERE/node_modules/playwright-core" || "$(cat "$stamp" 2>/dev/null || true)" != "$lock_sum" ]]; then
  gh_log "npm ci (tests/browser)"
  (cd "$HERE" && timeout 300 npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
    { gh_err "npm ci failed in $HERE"; exit 1; }
  printf '%s\n' "$lock_sum" >"$stamp"
fi

# --- run directory and cleanup -------------------------------------------------------------

RUN="$(mktemp -d /tmp/gh-browser.XXXXXX)"
chmod 755 "$RUN" # the postgres user (when we are root) must reach $RUN/pg
mkdir -p "$RUN/tmp"
rm -rf "$RESULTS"

own_services="" db_created="" gw_pid="" up_pid="" node_pid=""
ADMIN_DB_URL="" REDIS_URL_RUN="" PREFIX="" DB_NAME=""

# Stop a process we started, by pid: TERM, then KILL after 10 s.
stop_pid() {
  local pid="$1" i
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  gh_warn "pid $pid did not stop in 10 s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

cleaned=""
cleanup() {
  [[ -n "$cleaned" ]] && return 0
  cleaned=1
  local pids p
  # The tests' process group (node and anything it spawned in it).
  if [[ -n "$node_pid" ]] && kill -0 "$node_pid" 2>/dev/null; then
    kill -TERM -- "-$node_pid" 2>/dev/null || kill -TERM "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
  fi
  # Playwright starts Chromium in a process group of its own and kills it when node
  # exits; should node have died without doing so, its profiles live under $RUN/tmp.
  pids="$(pgrep -f -- "--user-data-dir=$RUN/tmp/" 2>/dev/null || true)"
  for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
  stop_pid "$gw_pid"
  stop_pid "$up_pid"
  if [[ -f "$RUN/gatehouse.log" && -d "$RESULTS" ]]; then cp "$RUN/gatehouse.log" "$RESULTS/" || true; fi
  if [[ -n "$own_services" ]]; then
    gh_stop_postgres "$RUN/pg" || true
    gh_stop_redis "$RUN/redis" || true
  else
    if [[ -n "$db_created" ]]; then
      gh_psql "$ADMIN_DB_URL" -q -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null 2>&1 ||
        gh_warn "could not drop database $DB_NAME"
    fi
    if [[ -n "$PREFIX" && -n "$REDIS_URL_RUN" ]]; then
      timeout 30 redis-cli -u "$REDIS_URL_RUN" --scan --pattern "$PREFIX*" 2>/dev/null |
        timeout 30 xargs -r -n 500 redis-cli -u "$REDIS_URL_RUN" unlink >/dev/null 2>&1 ||
        gh_warn "could not delete the Redis keys under $PREFIX"
    fi
  fi
  rm -rf "$RUN"
}
on_signal() {
  trap - INT TERM
  gh_warn "interrupted"
  cleanup
  exit "$1"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

# --- Postgres and Redis ---------------------------------------------------------------------

if [[ -n "${GATEHOUSE_TEST_DATABASE_URL:-}" && -n "${GATEHOUSE_TEST_REDIS_URL:-}" ]]; then
  ADMIN_DB_URL="$GATEHOUSE_TEST_DATABASE_URL"
  REDIS_URL_RUN="$GATEHOUSE_TEST_REDIS_URL"
  gh_ensure_command psql postgresql-client
  gh_ensure_command redis-cli redis-tools
else
  gh_ensure_packages
  own_services=1
  pg_port="$(gh_free_port)"
  redis_port="$(gh_free_port)"
  while [[ "$redis_port" == "$pg_port" ]]; do redis_port="$(gh_free_port)"; done
  GH_PG_OPTS="fsync=off synchronous_commit=off full_page_writes=off" \
    gh_start_postgres "$RUN/pg" "$pg_port"
  gh_start_redis "$RUN/redis" "$redis_port" --appendonly no
  ADMIN_DB_URL="postgres://gatehouse@127.0.0.1:$pg_port/postgres"
  REDIS_URL_RUN="redis://127.0.0.1:$redis_port"
fi

suffix="$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
DB_NAME="gh_browser_$suffix"
PREFIX="gb$suffix:"
# The admin URL's database path replaced by ours (a query string, if any, kept).
db_base="${ADMIN_DB_URL%%\?*}"
db_query=""
[[ "$ADMIN_DB_URL" == *\?* ]] && db_query="?${ADMIN_DB_URL#*\?}"
DB_URL="${db_base%/*}/$DB_NAME$db_query"

gh_log "creating database $DB_NAME"
gh_psql "$ADMIN_DB_URL" -q -c "CREATE DATABASE $DB_NAME" >/dev/null
db_created=1

# --- gateway ------------------------------------------------------------------------------

gw_port="$(gh_free_port)"
up_port="$(gh_free_port)"
while [[ "$up_port" == "$gw_port" ]]; do up_port="$(gh_free_port)"; done
apps_port="$(gh_free_port)"
while [[ "$apps_port" == "$gw_port" || "$apps_port" == "$up_port" ]]; do apps_port="$(gh_free_port)"; done
# Apps on their own origin: Chromium resolves *.localhost to loopback by itself.
APPS_ORIGIN="http://orders.localhost:$apps_port"
BASE="http://127.0.0.1:$gw_port"
RETURN_ORIGIN="http://127.0.0.1:$up_port"
gen_password() { head -c 18 /dev/urandom | base64 | tr '+/' '-_'; }
ADMIN_PASSWORD="$(gen_password)"
DEMO_PASSWORD="$(gen_password)"

# Nothing Gatehouse-related leaks in from the caller's environment (scripts/test exports
# GATEHOUSE_TEST_*; a developer may have DATABASE_URL set): only what is listed here.
unset_env=()
while IFS= read -r name; do
  case "$name" in
    GATEHOUSE_* | DATABASE_URL | REDIS_URL | REDIS_CACHE_URL) unset_env+=(-u "$name") ;;
  esac
done < <(compgen -e)
gw_env=(
  "DATABASE_URL=$DB_URL"
  "REDIS_URL=$REDIS_URL_RUN"
  "GATEHOUSE_REDIS_KEY_PREFIX=$PREFIX"
  "GATEHOUSE_LISTEN=127.0.0.1:$gw_port"
  "GATEHOUSE_ISSUER=$BASE"
  "GATEHOUSE_KEY_ENCRYPTION_KEY=$(head -c 32 /dev/urandom | base64)"
  "GATEHOUSE_COOKIE_SECURE=false"
  "GATEHOUSE_METRICS_LISTEN=127.0.0.1:0"
  "GATEHOUSE_LOG_FORMAT=json"
  "GATEHOUSE_LOG=info"
  "GATEHOUSE_ADMIN_PASSWORD=$ADMIN_PASSWORD"
  "GATEHOUSE_DEMO_PASSWORD=$DEMO_PASSWORD"
  "GATEHOUSE_PROXY__LOGIN_TENANT=acme"
  "GATEHOUSE_PROXY_LISTEN=127.0.0.1:$apps_port"
  "GATEHOUSE_PROXY__HOSTS=orders.localhost=orders"
  # proxy.test.mjs also covers the same-origin mode (/svc/...).
  "GATEHOUSE_PROXY_SAME_ORIGIN=true"
)

gh_log "gatehouse migrate"
timeout 120 env "${unset_env[@]}" "${gw_env[@]}" "$BIN_DIR/gatehouse" migrate >"$RUN/migrate.log" 2>&1 ||
  { cat "$RUN/migrate.log" >&2; gh_err "gatehouse migrate failed"; exit 1; }
gh_log "gatehouse bootstrap --demo"
timeout 120 env "${unset_env[@]}" "${gw_env[@]}" "$BIN_DIR/gatehouse" bootstrap --demo \
  --upstream "v1=127.0.0.1:$up_port" --upstream "v2=127.0.0.1:$up_port" >"$RUN/bootstrap.log" 2>&1 ||
  { cat "$RUN/bootstrap.log" >&2; gh_err "gatehouse bootstrap failed"; exit 1; }

# The demo tenant may send people back to its own origin (bootstrap sets the issuer's);
# add the demo upstream's, so a return_to to another allowed site can be followed.
gh_psql "$DB_URL" -q -c \
  "UPDATE tenants SET allowed_return_origins = array_append(allowed_return_origins, '$RETURN_ORIGIN') WHERE slug = 'acme'" >/dev/null

"$BIN_DIR/demo-upstream" --name browser --listen "127.0.0.1:$up_port" >"$RUN/upstream.log" 2>&1 &
up_pid=$!
gh_wait_port "$up_port" 15 || { cat "$RUN/upstream.log" >&2; gh_err "demo-upstream did not start"; exit 1; }

gh_log "starting gatehouse serve on $BASE"
env "${unset_env[@]}" "${gw_env[@]}" "$BIN_DIR/gatehouse" serve >"$RUN/gatehouse.log" 2>&1 &
gw_pid=$!
ready=""
deadline=$((SECONDS + 60))
while ((SECONDS < deadline)) && kill -0 "$gw_pid" 2>/dev/null; do
  if [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/readyz" 2>/dev/null || true)" == 200 ]]; then
    ready=1
    break
  fi
  sleep 0.3
done
if [[ -z "$ready" ]]; then
  tail -n 40 "$RUN/gatehouse.log" >&2 || true
  gh_err "the gateway did not become ready (GET $BASE/readyz never answered 200 within 60 s)"
  exit 1
fi

# --- tests ----------------------------------------------------------------------------------

if (($# > 0)); then
  files=("$@")
else
  files=()
  for f in "$HERE"/*.test.mjs; do files+=("$f"); done
fi

gh_log "node --test (${#files[@]} files) against $BASE"
mkdir -p "$RESULTS"
start=$SECONDS
set +e
# Own process group, so cleanup can stop node and whatever it started in one go.
(
  cd "$HERE"
  exec setsid env "${unset_env[@]}" \
    TMPDIR="$RUN/tmp" \
    GH_BASE_URL="$BASE" \
    GH_TENANT=acme \
    GH_DEMO_PASSWORD="$DEMO_PASSWORD" \
    GH_RETURN_ORIGIN="$RETURN_ORIGIN" \
    GH_APPS_ORIGIN="$APPS_ORIGIN" \
    GH_CHROMIUM="$CHROMIUM" \
    GH_RESULTS="$RESULTS" \
    GH_HEADED="${GH_BROWSER_HEADED:-}" \
    timeout --signal=TERM --kill-after=20 "$TEST_TIMEOUT" \
    node --test --test-reporter=spec --test-concurrency=1 --test-timeout=120000 "${files[@]}"
) &
node_pid=$!
wait "$node_pid"
status=$?
node_pid=""
set -e

if ((status == 124)); then gh_err "the browser tests did not finish within ${TEST_TIMEOUT}s"; fi
if ((status == 0)); then
  rm -rf "$RESULTS"
  gh_log "browser tests passed in $((SECONDS - start))s"
else
  cp "$RUN/gatehouse.log" "$RESULTS/" 2>/dev/null || true
  gh_err "browser tests failed (exit $status) after $((SECONDS - start))s; screenshots, pages and the gateway log: ${RESULTS#"$REPO"/}/"
fi
exit "$status"
