#!/bin/sh
# Builds nats-bench (scripts/connector-bench/nats-bench/main.go: upstream's nats-bench flags plus
# JetStream publish/pull phases) from Debian's packages only, offline (golang-go and nats.go's
# sources, golang-github-nats-io-go-nats-dev), into ~/.cache/paystream-services/nats-bench.
set -e
SRC=$(cd "$(dirname "$0")/nats-bench" && pwd)
OUT="$HOME/.cache/paystream-services/nats-bench"
command -v go >/dev/null && [ -d /usr/share/gocode/src/github.com/nats-io/nats.go ] ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y golang-go golang-github-nats-io-go-nats-dev >/dev/null
mkdir -p "$OUT"
cd "$SRC"
GOPATH=/usr/share/gocode GO111MODULE=off GOPROXY=off GOFLAGS= GOCACHE="$OUT/gocache" \
  go build -o "$OUT/nats-bench" .
echo "built $OUT/nats-bench"
