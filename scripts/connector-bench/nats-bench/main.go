// nats-bench: a NATS client benchmark built only from Debian's
// golang-github-nats-io-go-nats-dev (nats.go 1.22.1 + its bench package).
//
// Core mode follows the flags and behaviour of upstream nats.go's
// examples/nats-bench (that example is not shipped in the Debian package):
//   nats-bench [-s url] [-np N] [-ns N] [-n N] [-ms SIZE] [-csv file] <subject>
// JetStream mode (-js) adds:
//   -stream NAME   stream to create (must start with BENCH_; deleted afterwards unless -keep)
//   -window N      max async publishes (acks) in flight per publisher (default 10000)
//   -batch N       pull-consumer fetch batch size (default 1000)
//   -storage file|memory
// In -js mode publishers run first (async publish, all acks awaited), then
// -ns durable pull consumers each consume all N messages (AckAll policy,
// the last message of each fetched batch is acked), so pub and sub rates are
// measured separately.
package main

import (
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/bench"
)

const (
	DefaultNumMsgs     = 100000
	DefaultNumPubs     = 1
	DefaultNumSubs     = 0
	DefaultMessageSize = 128
)

func usage() {
	log.Printf("Usage: nats-bench [-s server (%s)] [--tls] [-np NUM_PUBLISHERS] [-ns NUM_SUBSCRIBERS] [-n NUM_MSGS] [-ms MESSAGE_SIZE] [-csv csvfile] [-js [-stream BENCH_NAME] [-window N] [-batch N] [-storage file|memory] [-keep]] <subject>\n", nats.DefaultURL)
	flag.PrintDefaults()
}

func showUsageAndExit(exitcode int) {
	usage()
	os.Exit(exitcode)
}

var (
	benchmark *bench.Benchmark
	msgSize   int
	numMsgs   int
	window    int
	batch     int
	stream    string
)

func main() {
	var urls = flag.String("s", nats.DefaultURL, "The nats server URLs (separated by comma)")
	var tls = flag.Bool("tls", false, "Use TLS Secure Connection")
	var numPubs = flag.Int("np", DefaultNumPubs, "Number of Concurrent Publishers")
	var numSubs = flag.Int("ns", DefaultNumSubs, "Number of Concurrent Subscribers")
	var nMsgs = flag.Int("n", DefaultNumMsgs, "Number of Messages to Publish")
	var mSize = flag.Int("ms", DefaultMessageSize, "Size of the message.")
	var csvFile = flag.String("csv", "", "Save bench data to csv file")
	var userCreds = flag.String("creds", "", "User Credentials File")
	var nkeyFile = flag.String("nkey", "", "NKey Seed File")
	var useJS = flag.Bool("js", false, "Use JetStream (async publish with acks, durable pull consumers)")
	var streamName = flag.String("stream", "BENCH_STREAM", "JetStream stream name (must start with BENCH_)")
	var win = flag.Int("window", 10000, "JetStream: max async publish acks in flight per publisher")
	var bat = flag.Int("batch", 1000, "JetStream: pull consumer fetch batch size")
	var storage = flag.String("storage", "file", "JetStream: stream storage, file or memory")
	var keep = flag.Bool("keep", false, "JetStream: keep the stream after the run")
	var showHelp = flag.Bool("h", false, "Show help message")

	log.SetFlags(0)
	flag.Usage = usage
	flag.Parse()

	if *showHelp {
		showUsageAndExit(0)
	}

	args := flag.Args()
	if len(args) != 1 {
		showUsageAndExit(1)
	}

	if *nMsgs <= 0 {
		log.Fatal("Number of messages should be greater than zero.")
	}
	msgSize, numMsgs, window, batch, stream = *mSize, *nMsgs, *win, *bat, *streamName

	opts := nats.GetDefaultOptions()
	opts.Servers = strings.Split(*urls, ",")
	for i, s := range opts.Servers {
		opts.Servers[i] = strings.Trim(s, " ")
	}
	opts.Secure = *tls
	opts.Name = "NATS Benchmark"

	if *userCreds != "" && *nkeyFile != "" {
		log.Fatal("specify -creds or -nkey, not both")
	}
	if *userCreds != "" {
		if err := nats.UserCredentials(*userCreds)(&opts); err != nil {
			log.Fatalf("creds: %v", err)
		}
	}
	if *nkeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(*nkeyFile)
		if err != nil {
			log.Fatal(err)
		}
		if err := o(&opts); err != nil {
			log.Fatal(err)
		}
	}

	subj := args[0]
	name := "NATS"
	if *useJS {
		name = "NATS JetStream"
	}
	benchmark = bench.NewBenchmark(name, *numSubs, *numPubs)

	if *useJS {
		if !strings.HasPrefix(stream, "BENCH_") {
			log.Fatal("-stream must start with BENCH_")
		}
		runJetStream(opts, subj, *numPubs, *numSubs, *storage, *keep)
	} else {
		runCore(opts, subj, *numPubs, *numSubs)
	}

	benchmark.Close()
	fmt.Print(benchmark.Report())

	if len(*csvFile) > 0 {
		csv := benchmark.CSV()
		ioutil.WriteFile(*csvFile, []byte(csv), 0644)
		fmt.Printf("Saved metric data in csv file %s\n", *csvFile)
	}
}

// ---------------------------------------------------------------- core NATS

func runCore(opts nats.Options, subj string, numPubs, numSubs int) {
	var startwg sync.WaitGroup
	var donewg sync.WaitGroup

	donewg.Add(numPubs + numSubs)

	// Run Subscribers first
	startwg.Add(numSubs)
	for i := 0; i < numSubs; i++ {
		nc, err := opts.Connect()
		if err != nil {
			log.Fatalf("Can't connect: %v\n", err)
		}
		defer nc.Close()
		go runSubscriber(nc, subj, &startwg, &donewg, numMsgs, msgSize)
	}
	startwg.Wait()

	// Now Publishers
	startwg.Add(numPubs)
	pubCounts := bench.MsgsPerClient(numMsgs, numPubs)
	for i := 0; i < numPubs; i++ {
		nc, err := opts.Connect()
		if err != nil {
			log.Fatalf("Can't connect: %v\n", err)
		}
		defer nc.Close()
		go runPublisher(nc, subj, &startwg, &donewg, pubCounts[i], msgSize)
	}

	log.Printf("Starting benchmark [msgs=%d, msgsize=%d, pubs=%d, subs=%d]\n", numMsgs, msgSize, numPubs, numSubs)

	startwg.Wait()
	donewg.Wait()
}

func runPublisher(nc *nats.Conn, subj string, startwg, donewg *sync.WaitGroup, numMsgs int, msgSize int) {
	startwg.Done()

	var msg []byte
	if msgSize > 0 {
		msg = make([]byte, msgSize)
	}

	start := time.Now()

	for i := 0; i < numMsgs; i++ {
		nc.Publish(subj, msg)
	}
	nc.Flush()
	benchmark.AddPubSample(bench.NewSample(numMsgs, msgSize, start, time.Now(), nc))

	donewg.Done()
}

func runSubscriber(nc *nats.Conn, subj string, startwg, donewg *sync.WaitGroup, numMsgs int, msgSize int) {
	received := 0
	ch := make(chan time.Time, 2)
	sub, _ := nc.Subscribe(subj, func(msg *nats.Msg) {
		received++
		if received == 1 {
			ch <- time.Now()
		}
		if received >= numMsgs {
			ch <- time.Now()
		}
	})
	sub.SetPendingLimits(-1, -1)
	nc.Flush()
	startwg.Done()

	start := <-ch
	end := <-ch
	benchmark.AddSubSample(bench.NewSample(numMsgs, msgSize, start, end, nc))
	nc.Close()
	donewg.Done()
}

// ---------------------------------------------------------------- JetStream

func runJetStream(opts nats.Options, subj string, numPubs, numSubs int, storage string, keep bool) {
	admin, err := opts.Connect()
	if err != nil {
		log.Fatalf("Can't connect: %v\n", err)
	}
	defer admin.Close()
	js, err := admin.JetStream()
	if err != nil {
		log.Fatalf("JetStream: %v", err)
	}
	st := nats.FileStorage
	if storage == "memory" {
		st = nats.MemoryStorage
	}
	// Start from an empty stream of our own.
	_ = js.DeleteStream(stream)
	if _, err := js.AddStream(&nats.StreamConfig{Name: stream, Subjects: []string{subj}, Storage: st}); err != nil {
		log.Fatalf("AddStream %s: %v", stream, err)
	}
	if !keep {
		defer func() {
			if err := js.DeleteStream(stream); err != nil {
				log.Printf("DeleteStream %s: %v", stream, err)
			}
		}()
	}

	log.Printf("Starting JetStream benchmark [stream=%s, storage=%s, msgs=%d, msgsize=%d, pubs=%d, subs=%d, window=%d, batch=%d]\n",
		stream, storage, numMsgs, msgSize, numPubs, numSubs, window, batch)

	// Phase 1: publishers.
	var wg sync.WaitGroup
	pubCounts := bench.MsgsPerClient(numMsgs, numPubs)
	conns := []*nats.Conn{}
	for i := 0; i < numPubs; i++ {
		nc, err := opts.Connect()
		if err != nil {
			log.Fatalf("Can't connect: %v\n", err)
		}
		conns = append(conns, nc)
	}
	for i := 0; i < numPubs; i++ {
		wg.Add(1)
		go func(nc *nats.Conn, n int) {
			defer wg.Done()
			runJSPublisher(nc, subj, n)
		}(conns[i], pubCounts[i])
	}
	wg.Wait()
	for _, nc := range conns {
		nc.Close()
	}

	// Phase 2: durable pull consumers, each reads the whole stream.
	conns = conns[:0]
	for i := 0; i < numSubs; i++ {
		nc, err := opts.Connect()
		if err != nil {
			log.Fatalf("Can't connect: %v\n", err)
		}
		conns = append(conns, nc)
	}
	for i := 0; i < numSubs; i++ {
		wg.Add(1)
		go func(nc *nats.Conn, id int) {
			defer wg.Done()
			runJSPuller(nc, subj, fmt.Sprintf("BENCH_DUR_%d", id))
		}(conns[i], i)
	}
	wg.Wait()
	for _, nc := range conns {
		nc.Close()
	}
}

func runJSPublisher(nc *nats.Conn, subj string, n int) {
	js, err := nc.JetStream(nats.PublishAsyncMaxPending(window))
	if err != nil {
		log.Fatalf("JetStream: %v", err)
	}
	var msg []byte
	if msgSize > 0 {
		msg = make([]byte, msgSize)
	}
	futures := make([]nats.PubAckFuture, 0, window)
	start := time.Now()
	for i := 0; i < n; i++ {
		f, err := js.PublishAsync(subj, msg)
		if err != nil {
			log.Fatalf("PublishAsync: %v", err)
		}
		futures = append(futures, f)
		if len(futures) == window || i == n-1 {
			// Wait for the whole window to be acked, checking for errors.
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(60 * time.Second):
				log.Fatalf("timed out waiting for publish acks")
			}
			for _, f := range futures {
				select {
				case err := <-f.Err():
					log.Fatalf("publish nack: %v", err)
				default:
				}
			}
			futures = futures[:0]
		}
	}
	benchmark.AddPubSample(bench.NewSample(n, msgSize, start, time.Now(), nc))
}

func runJSPuller(nc *nats.Conn, subj, durable string) {
	js, err := nc.JetStream()
	if err != nil {
		log.Fatalf("JetStream: %v", err)
	}
	sub, err := js.PullSubscribe(subj, durable, nats.BindStream(stream), nats.AckAll(), nats.MaxAckPending(-1))
	if err != nil {
		log.Fatalf("PullSubscribe: %v", err)
	}
	received := 0
	start := time.Now()
	for received < numMsgs {
		msgs, err := sub.Fetch(batch, nats.MaxWait(5*time.Second))
		if err != nil {
			log.Fatalf("Fetch (%s, after %d msgs): %v", durable, received, err)
		}
		received += len(msgs)
		if len(msgs) > 0 {
			if err := msgs[len(msgs)-1].Ack(); err != nil {
				log.Fatalf("Ack: %v", err)
			}
		}
	}
	nc.Flush()
	benchmark.AddSubSample(bench.NewSample(received, msgSize, start, time.Now(), nc))
}
