#!/usr/bin/env python3
"""Baseline: confluent-kafka (bundled librdkafka) produce + consume throughput.

Usage: python3 kafka_bench.py [--file /tmp/cb/ev.jsonl] [--bootstrap 127.0.0.1:9092] [--keep-topic]
"""
import argparse
import resource
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)  # includes librdkafka threads
    return r.ru_utime + r.ru_stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--file", default="/tmp/cb/ev.jsonl")
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--keep-topic", action="store_true")
    a = ap.parse_args()

    # Payloads are loaded before timing starts (file I/O is not part of the figures).
    with open(a.file, "rb") as f:
        lines = [l.rstrip(b"\r\n") for l in f if l.strip()]
    n = len(lines)
    nbytes = sum(len(l) for l in lines)

    topic = "baseline_%d" % int(time.time() * 1000)
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    fs = admin.create_topics([NewTopic(topic, num_partitions=a.partitions, replication_factor=1)],
                             operation_timeout=30)
    fs[topic].result()
    # wait until metadata shows all partitions
    for _ in range(100):
        md = admin.list_topics(topic, timeout=10)
        t = md.topics.get(topic)
        if t is not None and t.error is None and len(t.partitions) == a.partitions:
            break
        time.sleep(0.1)
    else:
        sys.exit("topic metadata never became ready")

    # ---------------- produce ----------------
    errors = []
    first_dr = []  # perf_counter of the first delivery report (after PID init)

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        elif not first_dr:
            first_dr.append(time.perf_counter())

    p = Producer({
        "bootstrap.servers": a.bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 10,
    })
    c0, t0 = cpu_s(), time.perf_counter()
    produce = p.produce
    for line in lines:
        while True:
            try:
                produce(topic, line, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)  # local queue full: serve delivery reports
        p.poll(0)
    remaining = p.flush(120)
    t1, c1 = time.perf_counter(), cpu_s()
    if remaining or errors:
        sys.exit("produce failed: %d undelivered, %d errors, first=%r"
                 % (remaining, len(errors), errors[:1]))
    prod_s, prod_cpu = t1 - t0, c1 - c0
    prod_startup = first_dr[0] - t0
    del p

    # ---------------- consume ----------------
    cons = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": "baseline_grp_%s" % uuid.uuid4().hex[:12],
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        "enable.auto.commit": True,
    })
    eof = set()
    t_first = None
    got = 0
    got_bytes = 0
    c0, t0 = cpu_s(), time.perf_counter()
    cons.subscribe([topic])
    deadline = time.monotonic() + 300
    while len(eof) < a.partitions:
        if time.monotonic() > deadline:
            sys.exit("consume timed out: got %d/%d, eof=%s" % (got, n, sorted(eof)))
        for m in cons.consume(num_messages=10000, timeout=0.1):
            e = m.error()
            if e is None:
                if t_first is None:
                    t_first = time.perf_counter()
                got += 1
                got_bytes += len(m.value())
            elif e.code() == KafkaError._PARTITION_EOF:
                eof.add(m.partition())
            else:
                raise KafkaException(e)
    t1, c1 = time.perf_counter(), cpu_s()
    cons.close()
    cons_s, cons_cpu = t1 - t0, c1 - c0
    cons_startup = (t_first or t1) - t0
    if got != n:
        print("WARNING: consumed %d != produced %d" % (got, n), file=sys.stderr)

    deleted = "kept"
    if not a.keep_topic:
        try:
            admin.delete_topics([topic], operation_timeout=30)[topic].result()
            deleted = "deleted"
        except Exception as ex:  # noqa: BLE001
            deleted = "delete failed: %s" % ex

    print("kafka topic=%s partitions=%d msgs=%d bytes=%d (%s)" % (topic, a.partitions, n, nbytes, deleted))
    print("%-16s %10s %12s %8s %8s" % ("phase", "msgs", "msgs/s", "wall_s", "cpu_s"))
    print("%-16s %10d %12.0f %8.2f %8.2f" % ("kafka_produce", n, n / prod_s, prod_s, prod_cpu))
    print("%-16s %10d %12.0f %8.2f %8.2f" % ("kafka_consume", got, got / cons_s, cons_s, cons_cpu))
    print("startup: produce start->first delivery report %.3fs (idempotent PID init); "
          "consume subscribe->first message %.3fs (group join)" % (prod_startup, cons_startup))
    print("excluding startup: produce %.0f msgs/s, consume %.0f msgs/s"
          % (n / (prod_s - prod_startup), got / (cons_s - cons_startup)))
    print("RESULT kafka_produce %.1f %.3f %.3f" % (n / prod_s, prod_s, prod_cpu))
    print("RESULT kafka_consume %.1f %.3f %.3f" % (got / cons_s, cons_s, cons_cpu))


if __name__ == "__main__":
    main()
