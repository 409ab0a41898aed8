#!/usr/bin/env python3
"""Baseline: pika publish (persistent, publisher confirms) + consume throughput.

Publish uses pika.SelectConnection with asynchronous publisher confirms and a
sliding window of at most --window unconfirmed messages (BlockingConnection +
confirm_delivery() waits for every single confirm, which is per-message).
Consume uses BlockingConnection.basic_consume, prefetch_count=20000, and
basic_ack(multiple=True) every 1000 messages.

Usage: python3 rabbit_bench.py [--file /tmp/cb/ev.jsonl] [--url amqp://guest:guest@127.0.0.1:5672/%2f]
                               [--window 1000] [--keep-queue]
"""
import argparse
import collections
import resource
import sys
import time

import pika


def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Publisher:
    def __init__(self, params, queue, bodies, window):
        self.params = params
        self.queue = queue
        self.bodies = bodies
        self.window = window
        self.next_i = 0                     # index of next body to publish
        self.outstanding = collections.deque()  # delivery tags awaiting confirm, in order
        self.ooo_acked = set()              # single acks received out of order
        self.confirmed = 0
        self.nacked = 0
        self.error = None
        self.t0 = self.c0 = self.t1 = self.c1 = None
        self.props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
        self.conn = None
        self.ch = None

    def run(self):
        self.conn = pika.SelectConnection(
            self.params,
            on_open_callback=self._on_conn_open,
            on_open_error_callback=self._on_fail,
            on_close_callback=self._on_conn_closed,
        )
        self.conn.ioloop.start()
        if self.error:
            raise RuntimeError(self.error)

    def _on_fail(self, _conn, err):
        self.error = "connection open failed: %r" % (err,)
        self.conn.ioloop.stop()

    def _on_conn_closed(self, _conn, reason):
        if self.t1 is None and self.error is None:
            self.error = "connection closed early: %r" % (reason,)
        self.conn.ioloop.stop()

    def _on_conn_open(self, conn):
        conn.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, ch):
        self.ch = ch
        ch.add_on_close_callback(self._on_channel_closed)
        ch.queue_declare(self.queue, durable=True, callback=self._on_declared)

    def _on_channel_closed(self, _ch, reason):
        if self.t1 is None:
            self.error = "channel closed: %r" % (reason,)
            self.conn.close()

    def _on_declared(self, _frame):
        self.ch.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_confirm_ok)

    def _on_confirm_ok(self, _frame):
        self.c0, self.t0 = cpu_s(), time.perf_counter()
        self._fill()

    def _fill(self):
        bodies, n = self.bodies, len(self.bodies)
        publish, q, props = self.ch.basic_publish, self.queue, self.props
        out = self.outstanding
        while self.next_i < n and len(out) < self.window:
            publish("", q, bodies[self.next_i], props)
            self.next_i += 1
            out.append(self.next_i)  # delivery tags are 1-based, sequential

    def _on_confirm(self, frame):
        m = frame.method
        ok = isinstance(m, pika.spec.Basic.Ack)
        out = self.outstanding
        if m.multiple:
            while out and out[0] <= m.delivery_tag:
                out.popleft()
                self.confirmed += 1
                if not ok:
                    self.nacked += 1
        else:
            self.confirmed += 1
            if not ok:
                self.nacked += 1
            if out and out[0] == m.delivery_tag:
                out.popleft()
                while out and out[0] in self.ooo_acked:
                    self.ooo_acked.discard(out.popleft())
            else:
                self.ooo_acked.add(m.delivery_tag)
        if self.confirmed == len(self.bodies):
            self.t1, self.c1 = time.perf_counter(), cpu_s()
            self.conn.close()
        else:
            self._fill()


def consume(params, queue, expected, prefetch=20000, ack_every=1000):
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=prefetch)
    st = {"n": 0, "bytes": 0, "unacked": 0}

    def on_msg(chan, method, _props, body):
        st["n"] += 1
        st["bytes"] += len(body)
        st["unacked"] += 1
        if st["unacked"] >= ack_every or st["n"] == expected:
            chan.basic_ack(delivery_tag=method.delivery_tag, multiple=True)
            st["unacked"] = 0
        if st["n"] == expected:
            chan.stop_consuming()

    c0, t0 = cpu_s(), time.perf_counter()
    ch.basic_consume(queue, on_msg, auto_ack=False)
    ch.start_consuming()
    t1, c1 = time.perf_counter(), cpu_s()
    return conn, ch, st["n"], t1 - t0, c1 - c0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--file", default="/tmp/cb/ev.jsonl")
    ap.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    ap.add_argument("--window", type=int, default=1000, help="max unconfirmed messages in flight")
    ap.add_argument("--keep-queue", action="store_true")
    a = ap.parse_args()

    # Payloads are loaded before timing starts (file I/O is not part of the figures).
    with open(a.file, "rb") as f:
        bodies = [l.rstrip(b"\r\n") for l in f if l.strip()]
    n = len(bodies)
    nbytes = sum(len(b) for b in bodies)
    queue = "baseline_%d" % int(time.time() * 1000)
    params = pika.URLParameters(a.url)

    pub = Publisher(params, queue, bodies, a.window)
    pub.run()
    if pub.nacked:
        sys.exit("publish: %d messages nacked" % pub.nacked)
    prod_s, prod_cpu = pub.t1 - pub.t0, pub.c1 - pub.c0

    conn, ch, got, cons_s, cons_cpu = consume(params, queue, n)
    if got != n:
        print("WARNING: consumed %d != published %d" % (got, n), file=sys.stderr)
    status = "kept"
    if not a.keep_queue:
        ch.queue_delete(queue)
        status = "deleted"
    conn.close()

    print("rabbit queue=%s msgs=%d bytes=%d window=%d (%s)" % (queue, n, nbytes, a.window, status))
    print("%-16s %10s %12s %8s %8s" % ("phase", "msgs", "msgs/s", "wall_s", "cpu_s"))
    print("%-16s %10d %12.0f %8.2f %8.2f" % ("rabbit_publish", n, n / prod_s, prod_s, prod_cpu))
    print("%-16s %10d %12.0f %8.2f %8.2f" % ("rabbit_consume", got, got / cons_s, cons_s, cons_cpu))
    print("RESULT rabbit_publish %.1f %.3f %.3f" % (n / prod_s, prod_s, prod_cpu))
    print("RESULT rabbit_consume %.1f %.3f %.3f" % (got / cons_s, cons_s, cons_cpu))


if __name__ == "__main__":
    main()
