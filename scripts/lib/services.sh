# shellcheck shell=bash
# scripts/lib/services.sh — start and stop the local Postgres and Redis that Gatehouse
# needs, without Docker and without touching any system-wide service.
#
# Source it (it is safe under `set -euo pipefail`):
#
#   . "$(dirname "$0")/lib/services.sh"
#   gh_ensure_packages
#   gh_start_postgres /tmp/run/pg "$(gh_free_port)"
#
# Functions (all return non-zero with a message on stderr when they fail):
#   gh_ensure_packages            apt-install redis-server / postgresql when missing
#   gh_ensure_command CMD [PKG]   apt-install PKG (default CMD) when CMD is missing
#   gh_free_port                  print a free TCP port on 127.0.0.1
#   gh_start_postgres DIR PORT    initdb (once) and start; extra `-c` settings in GH_PG_OPTS
#   gh_stop_postgres DIR          fast shutdown
#   gh_postgres_running DIR       status 0 when the cluster in DIR is running
#   gh_psql DIR|URL ARGS...       run psql (from the same Postgres version)
#   gh_start_redis DIR PORT [ARGS...]  daemonised redis-server; ARGS override defaults
#   gh_stop_redis DIR             stop the redis-server whose pidfile is DIR/redis.pid
#   gh_redis_running DIR          status 0 when that redis-server is alive
#   gh_wait_http URL SECS         poll until URL answers HTTP 200
#   gh_wait_port PORT SECS        poll until something accepts TCP on 127.0.0.1:PORT
#   gh_port_in_use PORT           status 0 when 127.0.0.1:PORT accepts connections
#
# Postgres runs as the invoking user, or as the `postgres` system user when invoked as
# root (initdb refuses to run as root). The cluster trusts every local connection
# (user `gatehouse`), listens on 127.0.0.1 only and is meant for development and tests.

[[ -n "${_GH_SERVICES_SH:-}" ]] && return 0
_GH_SERVICES_SH=1

if [[ -t 2 && -z "${NO_COLOR:-}" ]]; then
  _gh_c_log=$'\033[1;34m' _gh_c_warn=$'\033[1;33m' _gh_c_err=$'\033[1;31m' _gh_c_off=$'\033[0m'
else
  _gh_c_log="" _gh_c_warn="" _gh_c_err="" _gh_c_off=""
fi
gh_log() { printf '%s==>%s %s\n' "$_gh_c_log" "$_gh_c_off" "$*" >&2; }
gh_warn() { printf '%swarning:%s %s\n' "$_gh_c_warn" "$_gh_c_off" "$*" >&2; }
gh_err() { printf '%serror:%s %s\n' "$_gh_c_err" "$_gh_c_off" "$*" >&2; }

# ---------------------------------------------------------------------------------------
# Packages

# Directory holding initdb/pg_ctl/postgres: the highest /usr/lib/postgresql/N/bin, else
# wherever initdb is on PATH. Prints nothing and fails when Postgres is not installed.
gh_pg_bindir() {
  local best="" v bestv=-1 d
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] || continue
    v="${d#/usr/lib/postgresql/}"
    v="${v%%/*}"
    [[ "$v" =~ ^[0-9]+$ ]] || continue
    if ((v > bestv)); then bestv=$v best=$d; fi
  done
  if [[ -z "$best" ]] && command -v initdb >/dev/null 2>&1; then
    best="$(dirname "$(command -v initdb)")"
  fi
  [[ -n "$best" ]] || return 1
  printf '%s\n' "$best"
}

_gh_apt_updated=""
# gh_apt_install PKG... — install Debian/Ubuntu packages (root, or via sudo).
gh_apt_install() {
  local -a sudo=()
  if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      gh_err "need to install: $* — run as root or install sudo (or install them yourself)"
      return 1
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    gh_err "need to install: $* — apt-get not found; install them with your package manager"
    return 1
  fi
  if [[ -z "$_gh_apt_updated" ]]; then
    gh_log "apt-get update"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null ||
      { gh_err "apt-get update failed"; return 1; }
    _gh_apt_updated=1
  fi
  gh_log "apt-get install $*"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
    { gh_err "apt-get install $* failed"; return 1; }
}

# gh_ensure_command CMD [PKG] — make sure CMD exists, installing PKG (default CMD).
gh_ensure_command() {
  command -v "$1" >/dev/null 2>&1 && return 0
  gh_log "'$1' is missing; installing package ${2:-$1}"
  gh_apt_install "${2:-$1}"
  command -v "$1" >/dev/null 2>&1 || { gh_err "'$1' still not found after installing ${2:-$1}"; return 1; }
}

# gh_ensure_packages — redis-server (+ redis-cli) and the Postgres server, when missing.
gh_ensure_packages() {
  local -a missing=()
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    missing+=(redis-server)
  fi
  gh_pg_bindir >/dev/null || missing+=(postgresql)
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  gh_log "missing: ${missing[*]} — installing (only the servers' binaries are used; ours run on private ports)"
  gh_apt_install "${missing[@]}"
  command -v redis-server >/dev/null 2>&1 || { gh_err "redis-server not found after install"; return 1; }
  gh_pg_bindir >/dev/null || { gh_err "initdb not found after installing postgresql"; return 1; }
}

# ---------------------------------------------------------------------------------------
# Ports and waiting

gh_port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

gh_free_port() {
  if command -v python3 >/dev/null 2>&1 &&
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])' 2>/dev/null; then
    return 0
  fi
  local i p
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + RANDOM % 40000))
    if ! gh_port_in_use "$p"; then
      printf '%s\n' "$p"
      return 0
    fi
  done
  gh_err "no free port found"
  return 1
}

gh_wait_port() {
  local port="$1" secs="${2:-30}" deadline=$((SECONDS + ${2:-30}))
  until gh_port_in_use "$port"; do
    if ((SECONDS >= deadline)); then
      gh_err "nothing listening on 127.0.0.1:$port after ${secs}s"
      return 1
    fi
    sleep 0.2
  done
}

gh_wait_http() {
  local url="$1" secs="${2:-30}" code="" deadline=$((SECONDS + ${2:-30}))
  while :; do
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" 2>/dev/null)" || true
    [[ "$code" == 200 ]] && return 0
    if ((SECONDS >= deadline)); then
      gh_err "$url did not answer 200 within ${secs}s (last status: ${code:-no answer})"
      return 1
    fi
    sleep 0.3
  done
}

# ---------------------------------------------------------------------------------------
# Postgres

# Run a command as the user that owns the cluster: `postgres` when we are root.
_gh_as_pg() {
  if [[ "$(id -u)" -eq 0 ]]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

_gh_abspath() {
  local p="$1"
  [[ "$p" == /* ]] || p="$PWD/$p"
  printf '%s\n' "${p%/}"
}

# When root: give `postgres` search (x) permission on every ancestor of $1.
_gh_pg_traversable() {
  local d="$1"
  while [[ -n "$d" && "$d" != / ]]; do
    if ! runuser -u postgres -- test -x "$d" 2>/dev/null; then
      gh_log "chmod o+x $d (so the postgres user can reach its data directory)"
      chmod o+x "$d"
    fi
    d="$(dirname "$d")"
  done
}

gh_postgres_running() {
  local bindir datadir
  bindir="$(gh_pg_bindir)" || return 1
  datadir="$(_gh_abspath "$1")"
  [[ -f "$datadir/PG_VERSION" ]] || return 1
  _gh_as_pg "$bindir/pg_ctl" -D "$datadir" status >/dev/null 2>&1
}

# gh_start_postgres DATADIR PORT — idempotent: does nothing when already running.
# The log is DATADIR/../postgres-<name>.log; the unix socket lives in DATADIR/../pgsock
# (or /tmp/gh-pgsock-UID-PORT when that path would be too long for a socket).
gh_start_postgres() {
  local datadir port bindir parent name sockdir logfile opt
  local -a pgopts=()
  datadir="$(_gh_abspath "$1")"
  port="$2"
  bindir="$(gh_pg_bindir)" || { gh_err "Postgres is not installed (run gh_ensure_packages)"; return 1; }
  parent="$(dirname "$datadir")"
  name="$(basename "$datadir")"
  logfile="$parent/$name.log"

  if [[ "$(id -u)" -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
    gh_err "running as root but there is no 'postgres' system user to run Postgres as"
    return 1
  fi

  if gh_postgres_running "$datadir"; then
    gh_log "Postgres already running ($datadir)"
    return 0
  fi

  mkdir -p "$datadir"
  sockdir="$parent/pgsock"
  if ((${#sockdir} + 20 > 100)); then
    sockdir="/tmp/gh-pgsock-$(id -u)-$port"
  fi
  mkdir -p "$sockdir"
  touch "$logfile"
  if [[ "$(id -u)" -eq 0 ]]; then
    chown postgres: "$sockdir" "$logfile"
    [[ "$(stat -c %U "$datadir")" == postgres ]] || chown -R postgres: "$datadir"
    chmod 700 "$datadir"
    _gh_pg_traversable "$parent"
  else
    chmod 700 "$datadir"
  fi

  if [[ ! -f "$datadir/PG_VERSION" ]]; then
    gh_log "initdb $datadir"
    if ! _gh_as_pg "$bindir/initdb" -D "$datadir" -U gatehouse --auth=trust -E UTF8 --locale=C \
      >"$parent/$name-initdb.log" 2>&1; then
      gh_err "initdb failed; its output:"
      cat "$parent/$name-initdb.log" >&2
      return 1
    fi
  fi

  pgopts=(-c listen_addresses=127.0.0.1 -p "$port" -c "unix_socket_directories=$sockdir")
  for opt in ${GH_PG_OPTS:-}; do
    if [[ "$opt" == -* ]]; then pgopts+=("$opt"); else pgopts+=(-c "$opt"); fi
  done

  gh_log "starting Postgres on 127.0.0.1:$port (data: $datadir)"
  # pg_ctl detaches the postmaster into its own session, so Ctrl-C in the caller's
  # terminal does not reach it.
  if ! _gh_as_pg "$bindir/pg_ctl" -D "$datadir" -l "$logfile" -w -t 60 \
    -o "${pgopts[*]}" start >/dev/null; then
    gh_err "Postgres failed to start; last lines of $logfile:"
    tail -n 20 "$logfile" >&2 || true
    return 1
  fi
}

gh_stop_postgres() {
  local datadir bindir sockdir=""
  datadir="$(_gh_abspath "$1")"
  bindir="$(gh_pg_bindir)" || return 0
  [[ -f "$datadir/PG_VERSION" ]] || return 0
  if [[ -f "$datadir/postmaster.pid" ]]; then
    sockdir="$(sed -n 5p "$datadir/postmaster.pid" 2>/dev/null || true)"
  fi
  if _gh_as_pg "$bindir/pg_ctl" -D "$datadir" status >/dev/null 2>&1; then
    gh_log "stopping Postgres ($datadir)"
    _gh_as_pg "$bindir/pg_ctl" -D "$datadir" -m fast -w -t 60 stop >/dev/null
  fi
  if [[ "$sockdir" == /tmp/gh-pgsock-* ]]; then
    rm -rf "$sockdir"
  fi
}

# gh_psql URL ARGS... — psql of the same version as the server binaries.
gh_psql() {
  local bindir psql=psql
  if bindir="$(gh_pg_bindir)" && [[ -x "$bindir/psql" ]]; then psql="$bindir/psql"; fi
  "$psql" -X -v ON_ERROR_STOP=1 "$@"
}

# ---------------------------------------------------------------------------------------
# Redis

_gh_redis_pid() {
  local pidfile="$1/redis.pid" pid
  [[ -f "$pidfile" ]] || return 1
  pid="$(tr -dc 0-9 <"$pidfile")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid belonging to something else.
  if [[ -r "/proc/$pid/comm" ]] && ! grep -q redis "/proc/$pid/comm"; then return 1; fi
  printf '%s\n' "$pid"
}

gh_redis_running() { _gh_redis_pid "$(_gh_abspath "$1")" >/dev/null; }

# gh_start_redis DIR PORT [EXTRA ARGS...] — idempotent; extra args override the defaults
# (e.g. `--appendonly no`).
gh_start_redis() {
  local dir port deadline
  dir="$(_gh_abspath "$1")"
  port="$2"
  shift 2
  command -v redis-server >/dev/null 2>&1 || { gh_err "redis-server is not installed (run gh_ensure_packages)"; return 1; }
  mkdir -p "$dir"
  if gh_redis_running "$dir"; then
    gh_log "Redis already running ($dir)"
    return 0
  fi
  gh_log "starting Redis on 127.0.0.1:$port (data: $dir)"
  if ! redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --save "" \
    --appendonly yes --maxmemory-policy noeviction "$@"; then
    gh_err "redis-server failed to start"
    tail -n 20 "$dir/redis.log" >&2 2>/dev/null || true
    return 1
  fi
  deadline=$((SECONDS + 20))
  until [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == PONG ]]; do
    if ((SECONDS >= deadline)); then
      gh_err "Redis on 127.0.0.1:$port did not answer PING; last lines of $dir/redis.log:"
      tail -n 20 "$dir/redis.log" >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.1
  done
}

gh_stop_redis() {
  local dir pid i
  dir="$(_gh_abspath "$1")"
  pid="$(_gh_redis_pid "$dir")" || { rm -f "$dir/redis.pid"; return 0; }
  gh_log "stopping Redis ($dir)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$dir/redis.pid"; return 0; }
    sleep 0.1
  done
  gh_warn "Redis (pid $pid) did not stop in 10s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$dir/redis.pid"
}
