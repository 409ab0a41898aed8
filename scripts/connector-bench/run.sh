#!/bin/bash
# What the connectors cost (README, "What the connectors cost"): each connector's job over the
# same generated events (release build, 1 worker, the servers of scripts/services.sh on
# loopback), then the brokers' own clients on the same events. Usage:
#   cargo build --release && scripts/services.sh start && scripts/connector-bench/run.sh [EVENTS]
# Prints records/s (wall) and the process's CPU seconds per job, then each client's figures.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
B=${PAYSTREAM:-${CARGO_TARGET_DIR:-$HOME/.cache/paystream-target}/release/paystream}
N=${1:-200000}
T=$(date +%s)
W=$(mktemp -d /tmp/connector-bench.XXXXXX)
cd "$W"
$B gen --events "$N" --seed 5 -o ev.jsonl
SET="SET workers = '1';"
job() { # name, query file text
  mkdir -p "data_$1"; echo "$2" > "data_$1/job.sql"
  /usr/bin/time -f "%e %U %S" -o "time_$1.txt" "$B" --data-dir "data_$1" run "data_$1/job.sql" --until-end -q 2> "out_$1.txt" ||
    { cat "out_$1.txt"; exit 1; }
  read -r e u s < "time_$1.txt"; r=$(grep -o "read=[0-9]*" "out_$1.txt" | head -1 | cut -d= -f2)
  echo "$1: read=$r wall=${e}s cpu=$(echo "$u+$s" | bc)s records/s=$(echo "$r/$e" | bc)"
}
FILE="CREATE SOURCE payments WITH (connector = 'file', path = '$W/ev.jsonl', format = 'json');"
COUNT="SELECT merchant_id, window_start, count(*) AS n FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY merchant_id, window_start"
ALL="SELECT event_id, event_type, event_time, payment_id, merchant_id, card_id, amount_minor, currency FROM payments"
job file_log "$SET $FILE CREATE SINK c WITH (connector = 'log', topic = 'c'); INSERT INTO c $COUNT;"
job kafka_sink "$SET $FILE CREATE SINK k WITH (connector = 'kafka', topic = 'bench_$T', partitions = '3', key = 'card_id'); INSERT INTO k $ALL;"
job kafka_source "$SET CREATE SOURCE payments WITH (connector = 'kafka', topic = 'bench_$T', format = 'json'); CREATE SINK c WITH (connector = 'log', topic = 'c'); INSERT INTO c $COUNT;"
# The shipped settlement query end to end, Kafka to Kafka.
SETTLE=$(grep -v '^--' "$HERE/../../queries/settlement_per_minute.sql" | tr '\n' ' ' | sed 's/; *$//')
job kafka_settlement_kafka "$SET CREATE SOURCE payments WITH (connector = 'kafka', topic = 'bench_$T', group_id = 'settle_$T', format = 'json'); CREATE SINK s WITH (connector = 'kafka', topic = 'settle_$T', key = 'merchant_id'); INSERT INTO s $SETTLE;"
job rabbit_sink "$SET $FILE CREATE SINK r WITH (connector = 'rabbitmq', queue = 'bench_$T'); INSERT INTO r $ALL;"
job rabbit_source "$SET CREATE SOURCE payments WITH (connector = 'rabbitmq', queue = 'bench_$T', prefetch = '60000'); CREATE SINK c WITH (connector = 'log', topic = 'c'); INSERT INTO c $COUNT;"
psql -q postgres://postgres@127.0.0.1:5432/postgres -c "DROP TABLE IF EXISTS bench_pg" >/dev/null
job postgres_sink "$SET $FILE CREATE SINK p WITH (connector = 'postgres', table = 'bench_pg'); INSERT INTO p $ALL;"
job redis_sink "$SET $FILE CREATE SINK r WITH (connector = 'redis', stream = 'bench_$T', maxlen = '1000000'); INSERT INTO r $ALL;"
job nats_sink "$SET $FILE CREATE SINK n WITH (connector = 'nats', subject = 'bench.$T', stream = 'BENCH_$T'); INSERT INTO n $ALL;"
job nats_source "$SET CREATE SOURCE payments WITH (connector = 'nats', stream = 'BENCH_$T', max_ack_pending = '60000'); CREATE SINK c WITH (connector = 'log', topic = 'c'); INSERT INTO c $COUNT;"

# The brokers' own clients on the same events (confluent-kafka and pika from PyPI; nats-bench
# from Debian's nats.go sources).
python3 -c 'import confluent_kafka, pika' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check confluent-kafka pika
python3 "$HERE/kafka_bench.py" --file ev.jsonl
python3 "$HERE/rabbit_bench.py" --file ev.jsonl
NB="$HOME/.cache/paystream-services/nats-bench/nats-bench"
[ -x "$NB" ] || "$HERE/build_nats_bench.sh"
MS=$(( $(wc -c < ev.jsonl) / N ))
"$NB" -s nats://127.0.0.1:4222 -js -stream "BENCH_GO_$T" -window 10000 -batch 1000 -np 1 -ns 1 -n "$N" -ms "$MS" "bench.go.$T" |
  grep -E "Pub stats|Sub stats"
rm -rf "$W"
