#!/usr/bin/env bash
# The servers the connector tests talk to, on loopback, with throw-away data directories.
#
#   scripts/services.sh start [postgres kafka rabbitmq nats redis]   # default: every service
#   scripts/services.sh stop  [postgres kafka rabbitmq nats redis]
#   scripts/services.sh restart postgres|kafka|rabbitmq|nats|redis   # data kept (a broker
#                                                                    # going away mid-run)
#   scripts/services.sh status
#
# A server already listening at its usual address is used as it is (and never stopped by this
# script). A missing server is installed first: Debian's package by name via apt-get; what is
# built from crates is cached under ~/.cache/paystream-services. Data directories live under
# $PAYSTREAM_SERVICES_RUN (default /tmp/paystream-services-UID: servers that refuse to run as
# root must reach them) and are made afresh by every start: nothing a test wrote survives a
# restart of the services.
#
# Addresses, as a developer expects them by default:
#   postgres  postgres://postgres@127.0.0.1:5432/postgres   (trust on loopback: a test cluster)
#   kafka     127.0.0.1:9092   (nisshi, a Kafka-protocol broker built from crates.io once per
#             machine — about 30 minutes on 2 cores — and cached; its data in SQLite)
#   rabbitmq  amqp://guest:guest@127.0.0.1:5672/%2f
#   nats      nats://127.0.0.1:4222   (with JetStream)
#   redis     redis://127.0.0.1:6379
#
# `.ci/run` calls `start`; the tests call it for the service they need when nothing answers
# there, so `cargo test` works by hand too.
set -euo pipefail

ROOT="$HOME/.cache/paystream-services"
RUN="${PAYSTREAM_SERVICES_RUN:-/tmp/paystream-services-$(id -u)}"
ALL=(postgres kafka rabbitmq nats redis)
NISSHI_VERSION=0.8.1

say() { echo "services: $*" >&2; }
die() {
  say "$*"
  exit 1
}

# Whether something accepts TCP connections on 127.0.0.1:$1.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits up to $2 seconds (default 60) for port $1; the log file $3 is shown if it never opens,
# or as soon as the server's process $4 (when given) has exited.
wait_port() {
  local port=$1 secs=${2:-60} log=${3:-} pid=${4:-}
  for _ in $(seq $((secs * 10))); do
    listening "$port" && return 0
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      [ -n "$log" ] && [ -f "$log" ] && tail -n 30 "$log" >&2
      die "the server on port $port exited"
    fi
    sleep 0.1
  done
  [ -n "$log" ] && [ -f "$log" ] && tail -n 30 "$log" >&2
  die "nothing listens on 127.0.0.1:$port after ${secs}s"
}

# Installs Debian packages by name (the package index is refreshed once if a name is unknown).
apt_install() {
  command -v apt-get >/dev/null || die "apt-get not found: install $* by hand"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
  say "installing $* (Debian packages)"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "$@" >&2 ||
    { DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -q >&2 &&
      DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "$@" >&2; } ||
    die "could not install $*"
}

# Runs a command as the unprivileged `$1` when this script runs as root (servers that refuse
# root: PostgreSQL), as this user otherwise.
as_user() {
  local user=$1
  shift
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u "$user" -- "$@"
  else
    "$@"
  fi
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

start_postgres() {
  if listening 5432; then
    say "postgres: something already listens on 127.0.0.1:5432; used as it is"
    return
  fi
  [ -n "$(pg_bin)" ] || apt_install postgresql
  local bin dir
  bin=$(pg_bin)
  dir="$RUN/postgres"
  if [ -z "${KEEP:-}" ] || [ ! -d "$dir/data" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    [ "$(id -u)" -ne 0 ] || chown postgres "$dir"
    as_user postgres "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 ||
      { cat "$dir/initdb.log" >&2; die "postgres: initdb failed"; }
  fi
  # fsync off: a throw-away test cluster (the sink's exactly-once rests on transactions, which
  # this does not change while the server stays up).
  as_user postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p 5432 -k $dir -c fsync=off -c max_connections=200" \
    start >/dev/null || { tail -n 30 "$dir/server.log" >&2; die "postgres: the server did not start"; }
  wait_port 5432 30 "$dir/server.log"
  say "postgres: postgres://postgres@127.0.0.1:5432/postgres"
}

stop_postgres() {
  local dir="$RUN/postgres"
  [ -f "$dir/data/postmaster.pid" ] || return 0
  as_user postgres "$(pg_bin)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
  say "postgres: stopped"
}

# The Kafka-protocol broker: nisshi from crates.io, built once into the cache (its build
# directory is removed after the install; a failed build keeps it, so the next try resumes).
nisshi_bin() { echo "$ROOT/nisshi-$NISSHI_VERSION/bin/nisshi"; }

build_nisshi() {
  local root="$ROOT/nisshi-$NISSHI_VERSION"
  say "kafka: building the nisshi $NISSHI_VERSION broker from crates.io (once per machine, ~30 min on 2 cores)"
  CARGO_TARGET_DIR="$ROOT/nisshi-build" cargo install "nisshi@$NISSHI_VERSION" --locked \
    --ignore-rust-version --no-default-features --features libsql,dynostore \
    --root "$root" >"$ROOT/nisshi-build.log" 2>&1 ||
    { tail -n 30 "$ROOT/nisshi-build.log" >&2; die "kafka: building nisshi failed (log: $ROOT/nisshi-build.log)"; }
  rm -rf "$ROOT/nisshi-build"
}

start_kafka() {
  if listening 9092; then
    say "kafka: something already listens on 127.0.0.1:9092; used as it is"
    return
  fi
  [ -x "$(nisshi_bin)" ] || build_nisshi
  local dir="$RUN/kafka"
  [ -n "${KEEP:-}" ] || rm -rf "$dir"
  mkdir -p "$dir"
  # Groups rebalance at once (tests start consumers one at a time). The SQLite file is named
  # relative to the broker's directory.
  (cd "$dir" && exec nohup "$(nisshi_bin)" broker \
    --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 \
    --storage-engine "sqlite://nisshi.db" --group-initial-rebalance-delay 0s \
    >"$dir/server.log" 2>&1 </dev/null) &
  echo $! >"$dir/pid"
  wait_port 9092 60 "$dir/server.log" "$(cat "$dir/pid")"
  say "kafka: 127.0.0.1:9092"
}

stop_kafka() {
  local pid="$RUN/kafka/pid"
  [ -f "$pid" ] || return 0
  kill "$(cat "$pid")" 2>/dev/null || true
  rm -f "$pid"
  say "kafka: stopped"
}

# A server run in the background with its output in $dir/server.log and its pid in $dir/pid.
spawn() {
  local dir=$1
  shift
  (cd "$dir" && exec nohup "$@" >"$dir/server.log" 2>&1 </dev/null) &
  echo $! >"$dir/pid"
}

stop_pid() {
  local svc=$1 pid="$RUN/$1/pid"
  [ -f "$pid" ] || return 0
  kill "$(cat "$pid")" 2>/dev/null || true
  rm -f "$pid"
  say "$svc: stopped"
}

start_rabbitmq() {
  if listening 5672; then
    say "rabbitmq: something already listens on 127.0.0.1:5672; used as it is"
    return
  fi
  [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || apt_install rabbitmq-server
  local dir="$RUN/rabbitmq" as=()
  [ -n "${KEEP:-}" ] || rm -rf "$dir"
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then
    chown rabbitmq "$dir"
    as=(runuser -u rabbitmq --)
  fi
  # Its own node name, directories and cookie (HOME): independent of a system RabbitMQ.
  (cd "$dir" && exec nohup env HOME="$dir" RABBITMQ_NODENAME=paystream@localhost \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=5672 RABBITMQ_DIST_PORT=25673 \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" RABBITMQ_PID_FILE="$dir/rabbit.pid" \
    "${as[@]}" /usr/lib/rabbitmq/bin/rabbitmq-server >"$dir/server.log" 2>&1 </dev/null) &
  echo $! >"$dir/pid"
  wait_port 5672 120 "$dir/server.log" "$(cat "$dir/pid")"
  say "rabbitmq: amqp://guest:guest@127.0.0.1:5672/%2f"
}

stop_rabbitmq() {
  local dir="$RUN/rabbitmq"
  [ -f "$dir/rabbit.pid" ] && kill "$(cat "$dir/rabbit.pid")" 2>/dev/null || true
  stop_pid rabbitmq
}

start_nats() {
  if listening 4222; then
    say "nats: something already listens on 127.0.0.1:4222; used as it is"
    return
  fi
  command -v nats-server >/dev/null || apt_install nats-server
  local dir="$RUN/nats"
  [ -n "${KEEP:-}" ] || rm -rf "$dir"
  mkdir -p "$dir"
  spawn "$dir" nats-server -a 127.0.0.1 -p 4222 -js -sd "$dir/jetstream"
  wait_port 4222 30 "$dir/server.log" "$(cat "$dir/pid")"
  say "nats: nats://127.0.0.1:4222 (JetStream)"
}

stop_nats() { stop_pid nats; }

start_redis() {
  if listening 6379; then
    say "redis: something already listens on 127.0.0.1:6379; used as it is"
    return
  fi
  command -v redis-server >/dev/null || apt_install redis-server
  local dir="$RUN/redis"
  [ -n "${KEEP:-}" ] || rm -rf "$dir"
  mkdir -p "$dir"
  spawn "$dir" redis-server --bind 127.0.0.1 --port 6379 --dir "$dir" --save "" --appendonly no
  wait_port 6379 30 "$dir/server.log" "$(cat "$dir/pid")"
  say "redis: redis://127.0.0.1:6379"
}

stop_redis() { stop_pid redis; }

status() {
  local svc port
  for svc in "${ALL[@]}"; do
    case $svc in
      postgres) port=5432 ;;
      kafka) port=9092 ;;
      rabbitmq) port=5672 ;;
      nats) port=4222 ;;
      redis) port=6379 ;;
    esac
    if listening "$port"; then echo "$svc: listening on 127.0.0.1:$port"; else echo "$svc: down"; fi
  done
}

cmd=${1:-}
shift || true
services=("$@")
[ ${#services[@]} -gt 0 ] || services=("${ALL[@]}")
# A new machine has neither: the cache holds the broker's build and its log.
mkdir -p "$RUN" "$ROOT"
case $cmd in
  start | stop)
    for svc in "${services[@]}"; do
      case " ${ALL[*]} " in
        *" $svc "*) "${cmd}_$svc" ;;
        *) die "unknown service '$svc' (known: ${ALL[*]})" ;;
      esac
    done
    ;;
  restart)
    # Only a server this script started (its data directory is kept).
    for svc in "${services[@]}"; do
      [ -f "$RUN/$svc/pid" ] || [ -f "$RUN/$svc/data/postmaster.pid" ] ||
        die "$svc: not started by this script, so not restarted"
      "stop_$svc"
      for _ in $(seq 100); do
        case $svc in
          postgres) port=5432 ;; kafka) port=9092 ;; rabbitmq) port=5672 ;; nats) port=4222 ;; redis) port=6379 ;;
        esac
        listening "$port" || break
        sleep 0.1
      done
      KEEP=1 "start_$svc"
    done
    ;;
  status) status ;;
  *) die "usage: scripts/services.sh start|stop|restart|status [${ALL[*]}]" ;;
esac
