package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gotrack/gotrack/internal/pgtest"
	"github.com/gotrack/gotrack/internal/tracing/otlptest"
)

// scenario is one load shape, run against both servers.
type scenario struct {
	name         string
	about        string
	request      []byte // a complete HTTP/1.1 request
	eventsPerReq int64
	sinks        []string                         // where gotrack's events are counted
	env          func(dir, table string) []string // gotrack's settings
	postgres     bool
	kafka        bool // gotrack writes to a kfake cluster (bench/kfake) started for each run
	traced       bool // tracing on, exporting to an OTLP receiver the benchmark runs (tracedEnv)
}

var pixelQuery = "/px.gif?" + url.Values{
	"e": {"pageview"}, "url": {"https://shop.example/products/42?utm_source=news&utm_medium=email"},
	"ref": {"https://www.example.org/search?q=widgets"}, "title": {"Blue Widget – Shop"},
	"uid": {"v1234567"}, "sid": {"s7654321"}, "p.plan": {"pro"}, "p.ab": {"b"}, "cb": {"1732270000"},
}.Encode()

func getRequest(path string) []byte {
	return []byte("GET " + path + " HTTP/1.1\r\nHost: bench\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0\r\n" +
		"Referer: https://shop.example/products/42\r\n\r\n")
}

func collectRequest(n int) []byte {
	item := `{"type":"add_to_cart","url":"https://shop.example/products/42","visitor_id":"v1234567","session_id":"s7654321","props":{"sku":"W-42","qty":2,"price":19.99}}`
	body := "[" + strings.TrimSuffix(strings.Repeat(item+",", n), ",") + "]"
	return []byte("POST /collect HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nContent-Type: application/json\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}

// keyedPixelRequest is the pixel with a write key, from a page of the
// source's allowed origin, as gotrack.js or an <img> tag on that site sends it.
func keyedPixelRequest() []byte {
	return []byte("GET " + pixelQuery + "&k=wk_bench_key_1 HTTP/1.1\r\nHost: bench\r\n" +
		"User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n" +
		"Accept: image/avif,image/webp,*/*\r\nAccept-Language: en-GB,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n" +
		"Origin: https://shop.example\r\nReferer: https://shop.example/products/42\r\n\r\n")
}

// keyedEnv writes a one-source SOURCES_FILE and turns on AUTH_MODE=key;
// enrichment (ua, bot, campaign) is on by default.
func keyedEnv(dir, table string) []string {
	file := filepath.Join(dir, "sources.yaml")
	src := "sources:\n  - id: shop-web\n    write_keys: [\"wk_bench_key_1\"]\n    origins: [\"https://shop.example\"]\n"
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		panic(err)
	}
	return append(logEnv(dir, table), "AUTH_MODE=key", "SOURCES_FILE="+file, "ENRICH=ua,bot,campaign")
}

func logEnv(dir, _ string) []string {
	return []string{"OUTPUTS=log", "LOG_PATH=" + filepath.Join(dir, "events.ndjson")}
}

var scenarios = []scenario{
	{name: "pixel", about: "/px.gif with a realistic query string, NDJSON sink (LOG_FSYNC=batch), no spool",
		request: getRequest(pixelQuery), eventsPerReq: 1, sinks: []string{"log"}, env: logEnv},
	{name: "pixel-key", about: "/px.gif with AUTH_MODE=key (k= plus an allowed Origin), UA parsing, bot flagging and campaign parsing, NDJSON sink",
		request: keyedPixelRequest(), eventsPerReq: 1, sinks: []string{"log"}, env: keyedEnv},
	{name: "collect", about: "/collect with a batch of 20 events per request, NDJSON sink",
		request: collectRequest(20), eventsPerReq: 20, sinks: []string{"log"}, env: logEnv},
	{name: "spool", about: "/px.gif with SPOOL_FSYNC=always (group commit before every 2xx) and the NDJSON sink",
		request: getRequest(pixelQuery), eventsPerReq: 1, sinks: []string{"log"},
		env: func(dir, table string) []string {
			return append(logEnv(dir, table), "SPOOL_DIR="+filepath.Join(dir, "spool"), "SPOOL_FSYNC=always")
		}},
	{name: "pixel-traced", about: "pixel with tracing on: OTEL_TRACES_SAMPLER=parentbased_traceidratio, ratio 0.01, spans exported over OTLP/HTTP to a receiver on 127.0.0.1 run by the benchmark",
		request: getRequest(pixelQuery), eventsPerReq: 1, sinks: []string{"log"}, env: logEnv, traced: true},
	{name: "postgres", about: "/px.gif with OUTPUTS=log,postgres against a throwaway PostgreSQL",
		request: getRequest(pixelQuery), eventsPerReq: 1, sinks: []string{"log", "postgres"}, postgres: true,
		env: func(dir, table string) []string {
			return []string{"OUTPUTS=log,postgres", "LOG_PATH=" + filepath.Join(dir, "events.ndjson"),
				"PG_DSN=" + os.Getenv("PG_TEST_DSN"), "PG_TABLE=" + table, "QUEUE_SIZE=100000"}
		}},
	{name: "kafka", about: "/px.gif with OUTPUTS=log,kafka against kfake, franz-go's in-memory fake Kafka, run as a process of its own " +
		"(bench/kfake: one broker, 3 partitions); the sink's defaults (acks all with the idempotent producer, zstd, key event_id, BATCH_SIZE 500)",
		request: getRequest(pixelQuery), eventsPerReq: 1, sinks: []string{"log", "kafka"}, kafka: true,
		env: func(dir, _ string) []string {
			return []string{"OUTPUTS=log,kafka", "LOG_PATH=" + filepath.Join(dir, "events.ndjson"), "KAFKA_TOPIC=" + kafkaTopic, "QUEUE_SIZE=100000"}
		}},
}

func scenarioNames() []string {
	var out []string
	for _, s := range scenarios {
		out = append(out, s.name)
	}
	return out
}

// runResult is one run of one server.
type runResult struct {
	Server         string           `json:"server"`
	Run            int              `json:"run"`
	Requests       int64            `json:"requests"`
	OK             int64            `json:"ok_2xx"`
	Errors         int64            `json:"errors"`
	Seconds        float64          `json:"seconds"`
	RPS            float64          `json:"requests_per_second"`
	EPS            float64          `json:"events_per_second"`
	P50ms          float64          `json:"p50_ms"`
	P99ms          float64          `json:"p99_ms"`
	CPUSeconds     float64          `json:"cpu_seconds"`
	CPUPer1k       float64          `json:"cpu_seconds_per_1000_events"`
	PeakRSSMiB     float64          `json:"peak_rss_mib"`
	Expected       int64            `json:"events_expected,omitempty"`
	Stored         map[string]int64 `json:"events_stored,omitempty"`
	CatchUpSeconds float64          `json:"catch_up_seconds,omitempty"`
	// The kafka scenario: kfake's own CPU over the run; records per
	// second of the sink under the load (events it wrote over the time
	// spent in its writes); and, after the load, records per second of the
	// same records written to the same kfake again by GoTrack's sink and by
	// a plain franz-go producer, in batches of plainBatch awaited one at a
	// time, and by the plain producer all at once.
	KfakeCPUSeconds   float64 `json:"kfake_cpu_seconds,omitempty"`
	KfakeCPUPer1k     float64 `json:"kfake_cpu_seconds_per_1000_events,omitempty"`
	KafkaSinkRate     float64 `json:"kafka_sink_records_per_write_second,omitempty"`
	KafkaSinkBatched  float64 `json:"kafka_sink_batched_records_per_second,omitempty"`
	KafkaPlainBatched float64 `json:"kafka_plain_batched_records_per_second,omitempty"`
	KafkaPlainAsync   float64 `json:"kafka_plain_unbatched_records_per_second,omitempty"`
	// PostgreSQL's own CPU over the run, from the start of the load until
	// gotrack has stopped, when the benchmark started the server itself.
	PGCPUSeconds  float64 `json:"postgres_cpu_seconds,omitempty"`
	PGCPUPer1k    float64 `json:"postgres_cpu_seconds_per_1000_events,omitempty"`
	SpansReceived int64   `json:"otlp_spans_received,omitempty"` // traced scenarios: spans gotrack exported
}

type scenarioResult struct {
	Name     string      `json:"name"`
	About    string      `json:"about"`
	Runs     []runResult `json:"runs"`
	Ratios   []float64   `json:"ratios"` // gotrack / baseline requests per second, pair by pair
	Lost     int64       `json:"events_lost"`
	Surplus  int64       `json:"events_surplus"`
	Problems []string    `json:"problems,omitempty"`
}

type report struct {
	Machine   map[string]string `json:"machine"`
	Conns     int               `json:"connections"`
	Duration  string            `json:"duration_per_run"`
	Scenarios []scenarioResult  `json:"scenarios"`
}

func run(o options) error {
	for _, name := range o.scenarios {
		if !slices.Contains(scenarioNames(), name) {
			return fmt.Errorf("unknown scenario %q (want %s)", name, strings.Join(scenarioNames(), ", "))
		}
	}
	if o.runs < 1 || o.conns < 1 || o.duration <= 0 {
		return errors.New("-runs, -conns and -duration must be positive")
	}
	work, err := os.MkdirTemp("", "gotrack-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	o.workDir = work
	bins := map[string]string{"gotrack": filepath.Join(work, "gotrack"), "baseline": filepath.Join(work, "baseline"), "kfake": filepath.Join(work, "kfake")}
	o.kfakeBin = bins["kfake"]
	for name, pkg := range map[string]string{"gotrack": "./cmd/gotrack", "baseline": "./bench/baseline", "kfake": "./bench/kfake"} {
		if out, err := exec.Command("go", "build", "-o", bins[name], pkg).CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", name, err, out)
		}
	}
	rep := report{Machine: machine(), Conns: o.conns, Duration: o.duration.String()}
	failed := false
	for _, s := range scenarios {
		if !slices.Contains(o.scenarios, s.name) {
			continue
		}
		if s.postgres && os.Getenv("PG_TEST_DSN") == "" {
			return errors.New("scenario postgres needs PG_TEST_DSN; bench/run.sh starts a throwaway server and sets it")
		}
		fmt.Fprintf(os.Stderr, "bench: %s: %s\n", s.name, s.about)
		sr := scenarioResult{Name: s.name, About: s.about}
		for i := 1; i <= o.runs; i++ {
			base, err := runBaseline(o, bins["baseline"], s, i)
			if err != nil {
				return err
			}
			gt, err := runGotrack(o, bins["gotrack"], s, i)
			if err != nil {
				return err
			}
			sr.Runs = append(sr.Runs, base, gt)
			sr.Ratios = append(sr.Ratios, gt.RPS/base.RPS)
			for _, sink := range s.sinks {
				switch d := gt.Stored[sink] - gt.Expected; {
				case d < 0:
					sr.Lost -= d
					sr.Problems = append(sr.Problems, fmt.Sprintf("run %d: sink %s holds %d events, %d were answered 2xx: %d LOST",
						i, sink, gt.Stored[sink], gt.Expected, -d))
				case d > 0:
					sr.Surplus += d
					sr.Problems = append(sr.Problems, fmt.Sprintf("run %d: sink %s holds %d events, %d were answered 2xx: %d unaccounted for",
						i, sink, gt.Stored[sink], gt.Expected, d))
				}
			}
			fmt.Fprintf(os.Stderr, "bench: %s run %d: baseline %.0f req/s, gotrack %.0f req/s (%.0f%%)\n",
				s.name, i, base.RPS, gt.RPS, 100*gt.RPS/base.RPS)
		}
		if len(sr.Problems) > 0 {
			failed = true
		}
		rep.Scenarios = append(rep.Scenarios, sr)
	}
	printMarkdown(os.Stdout, rep)
	if o.jsonPath != "" {
		if err := os.MkdirAll(filepath.Dir(o.jsonPath), 0o755); err != nil {
			return err
		}
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(o.jsonPath, append(b, '\n'), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "bench: results written to %s\n", o.jsonPath)
	}
	if o.readme != "" && !failed {
		if err := writeReadme(o.readme, rep); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "bench: %s Performance section rewritten\n", o.readme)
	}
	if failed {
		fmt.Fprintln(os.Stderr, "\n!!!!!!!! bench: EVENTS UNACCOUNTED FOR: the 2xx count and the sinks disagree (see above) !!!!!!!!")
		for _, sr := range rep.Scenarios {
			for _, p := range sr.Problems {
				fmt.Fprintln(os.Stderr, "!!! "+sr.Name+": "+p)
			}
		}
		return errors.New("loss accounting failed")
	}
	return nil
}

func runBaseline(o options, bin string, s scenario, i int) (runResult, error) {
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return runResult{}, err
	}
	if err := cmd.Start(); err != nil {
		return runResult{}, err
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return runResult{}, fmt.Errorf("baseline: %w", err)
	}
	l := runLoad(strings.TrimSpace(addr), s.request, o.conns, o.duration)
	r := result("baseline", i, l, s.eventsPerReq)
	r.PeakRSSMiB = peakRSS(cmd.Process.Pid)
	r.CPUSeconds = procCPU(cmd.Process.Pid)
	r.CPUPer1k = 1000 * r.CPUSeconds / float64(max(1, r.OK*s.eventsPerReq))
	return r, nil
}

func runGotrack(o options, bin string, s scenario, i int) (runResult, error) {
	dir := filepath.Join(o.workDir, fmt.Sprintf("%s-%d", s.name, i))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return runResult{}, err
	}
	table := fmt.Sprintf("bench_%s_%d_%d", s.name, i, time.Now().Unix())
	cmd := exec.Command(bin)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "SERVER_ADDR=127.0.0.1:0", "LOG_FORMAT=json", "LOG_LEVEL=info",
		"DEAD_LETTER_PATH=" + filepath.Join(dir, "dead.ndjson"), "SHUTDOWN_TIMEOUT=60s"}, s.env(dir, table)...)
	cmd.Env = append(cmd.Env, o.env...)
	var kf *kfakeRun
	var metricsAddr string
	if s.kafka {
		var err error
		if kf, err = startKfake(o.kfakeBin); err != nil {
			return runResult{}, err
		}
		defer kf.stop()
		if metricsAddr, err = freeAddr(); err != nil {
			return runResult{}, err
		}
		cmd.Env = append(cmd.Env, "KAFKA_BROKERS="+kf.addr, "METRICS_ENABLED=true", "METRICS_ADDR="+metricsAddr)
	}
	var otlp *otlptest.Receiver
	if s.traced {
		otlp = otlptest.Start()
		defer otlp.Close()
		cmd.Env = append(cmd.Env, tracedEnv(otlp.URL)...)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return runResult{}, err
	}
	if err := cmd.Start(); err != nil {
		return runResult{}, err
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	addr, err := waitStarted(stderr)
	if err != nil {
		return runResult{}, fmt.Errorf("gotrack: %w", err)
	}
	go drain(stderr)

	// The table is counted after the load on a connection opened now, so
	// that its queries can be taken out of PostgreSQL's CPU: a count(*) of
	// the whole table, polled until it holds every event, is the bench's
	// work, not the sink's.
	var poll *pgCounter
	if s.postgres {
		if poll, err = openPGCounter(table); err != nil {
			return runResult{}, err
		}
		defer poll.close()
	}
	pgBefore, pollBefore := postgresCPU(s), poll.cpu()
	var kfBefore float64
	if kf != nil {
		kfBefore = procCPU(kf.cmd.Process.Pid)
	}
	stopPerf := startPerf(o, cmd.Process.Pid, fmt.Sprintf("%s-%d", s.name, i))
	l := runLoad(addr, s.request, o.conns, o.duration)
	stopPerf()
	r := result("gotrack", i, l, s.eventsPerReq)
	r.Expected = l.OK * s.eventsPerReq
	if s.postgres || s.kafka {
		// How long the table or topic takes to hold every event answered 2xx.
		count := func() (int64, error) { return poll.count() }
		if s.kafka {
			count = func() (int64, error) { return kafkaCount(kf.addr, kafkaTopic) }
		}
		start := time.Now()
		for time.Since(start) < 60*time.Second {
			if n, err := count(); err == nil && n >= r.Expected {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		r.CatchUpSeconds = time.Since(start).Seconds()
	}
	if s.kafka {
		if r.KafkaSinkRate, err = sinkWriteRate(metricsAddr, "kafka"); err != nil {
			return r, err
		}
	}
	r.PeakRSSMiB = peakRSS(cmd.Process.Pid)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return r, err
	}
	killed = true
	if err := cmd.Wait(); err != nil {
		return r, fmt.Errorf("gotrack exited with %w", err)
	}
	r.CPUSeconds = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	if otlp != nil { // gotrack's shutdown exported the spans still queued
		r.SpansReceived = int64(len(otlp.Spans()))
		fmt.Fprintf(os.Stderr, "bench: %s run %d: the OTLP receiver got %d spans\n", s.name, i, r.SpansReceived)
	}
	r.CPUPer1k = 1000 * r.CPUSeconds / float64(max(1, r.Expected))
	if pgAfter := postgresCPU(s); pgBefore > 0 && pgAfter > 0 {
		polled := poll.cpu() - pollBefore
		fmt.Fprintf(os.Stderr, "bench: %s run %d: counting the table's rows took %.2fs of PostgreSQL's CPU, left out of its own\n", s.name, i, polled)
		r.PGCPUSeconds = pgAfter - pgBefore - polled
		r.PGCPUPer1k = 1000 * r.PGCPUSeconds / float64(max(1, r.Expected))
	}
	if kf != nil {
		r.KfakeCPUSeconds = procCPU(kf.cmd.Process.Pid) - kfBefore
		r.KfakeCPUPer1k = 1000 * r.KfakeCPUSeconds / float64(max(1, r.Expected))
	}
	r.Stored = map[string]int64{}
	for _, sink := range s.sinks {
		var n int64
		switch sink {
		case "log":
			n, err = countLines(filepath.Join(dir, "events.ndjson"))
		case "postgres":
			n, err = countRows(table)
			dropTable(table)
		case "kafka":
			var recs []*kgo.Record
			if recs, err = consumeAll(kf.addr, kafkaTopic); err != nil {
				break
			}
			n = int64(len(recs))
			// The same records again, through GoTrack's sink and from a
			// plain franz-go producer, in turn, the best of three each.
			r.KafkaSinkBatched, r.KafkaPlainBatched, r.KafkaPlainAsync, err = kafkaRates(kf.addr, recs)
		}
		if err != nil {
			return r, err
		}
		r.Stored[sink] = n
	}
	os.RemoveAll(dir)
	return r, nil
}

// tracedEnv turns tracing on at a 1% sampling ratio, exporting to url.
func tracedEnv(url string) []string {
	return []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + url, "OTEL_TRACES_SAMPLER=parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG=0.01"}
}

func result(server string, i int, l load, perReq int64) runResult {
	secs := l.Elapsed.Seconds()
	return runResult{
		Server: server, Run: i, Requests: l.Requests, OK: l.OK, Errors: l.Errors, Seconds: secs,
		RPS: float64(l.OK) / secs, EPS: float64(l.OK*perReq) / secs,
		P50ms: ms(l.Latency.quantile(0.50)), P99ms: ms(l.Latency.quantile(0.99)),
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// waitStarted reads gotrack's JSON logs until the started line.
func waitStarted(r interface{ Read([]byte) (int, error) }) (string, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var l struct {
			Msg  string `json:"msg"`
			Addr string `json:"ingest_addr"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "gotrack started" {
			return l.Addr, nil
		}
		fmt.Fprintln(os.Stderr, "gotrack:", sc.Text())
	}
	return "", errors.New("exited before serving")
}

func drain(r interface{ Read([]byte) (int, error) }) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"level":"ERROR"`) || strings.Contains(sc.Text(), `"level":"WARN"`) {
			fmt.Fprintln(os.Stderr, "gotrack:", sc.Text())
		}
	}
}

func countLines(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	buf := make([]byte, 1<<20)
	for {
		k, err := f.Read(buf)
		for _, c := range buf[:k] {
			if c == '\n' {
				n++
			}
		}
		if err != nil {
			return n, nil
		}
	}
}

// pgCounter counts a table's rows on one connection and knows the CPU
// its server process has used.
type pgCounter struct {
	conn  *pgx.Conn
	table string
	pid   int // the server process of conn
}

func openPGCounter(table string) (*pgCounter, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, os.Getenv("PG_TEST_DSN"))
	if err != nil {
		return nil, err
	}
	p := &pgCounter{conn: c, table: table}
	// No parallel workers: all the counting is then in this one process.
	_, err = c.Exec(ctx, "SET max_parallel_workers_per_gather = 0")
	if err == nil {
		err = c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&p.pid)
	}
	if err != nil {
		c.Close(ctx)
		return nil, err
	}
	return p, nil
}

func (p *pgCounter) count() (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n int64
	err := p.conn.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{p.table}.Sanitize()).Scan(&n)
	return n, err
}

// cpu returns the CPU seconds the counter's server process has used, or 0
// for a nil counter.
func (p *pgCounter) cpu() float64 {
	if p == nil {
		return 0
	}
	return procCPU(p.pid)
}

func (p *pgCounter) close() { p.conn.Close(context.Background()) }

func countRows(table string) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, os.Getenv("PG_TEST_DSN"))
	if err != nil {
		return 0, err
	}
	defer c.Close(ctx)
	var n int64
	err = c.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{table}.Sanitize()).Scan(&n)
	return n, err
}

func dropTable(table string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := pgx.Connect(ctx, os.Getenv("PG_TEST_DSN")); err == nil {
		c.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{table}.Sanitize())
		c.Close(ctx)
	}
}

// peakRSS reads the process's peak resident set (VmHWM) from /proc.
func peakRSS(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// postgresCPU returns the CPU seconds the throwaway PostgreSQL server has
// used so far (see pgtest.ServerCPU), or 0 for scenarios without it.
func postgresCPU(s scenario) float64 {
	if !s.postgres {
		return 0
	}
	return pgtest.ServerCPU().Seconds()
}

// statFields returns the fields of a /proc/PID/stat file after the
// command name: state, ppid, ..., utime (11), stime, cutime, cstime (14).
func statFields(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return nil
	}
	return strings.Fields(s[i+2:])
}

// ticks converts clock ticks to seconds; USER_HZ is 100 on Linux.
func ticks(f string) float64 {
	v, _ := strconv.ParseFloat(f, 64)
	return v / 100
}

// procCPU reads the user and system CPU seconds a live process has used.
func procCPU(pid int) float64 {
	f := statFields(fmt.Sprintf("/proc/%d/stat", pid))
	if len(f) < 13 {
		return 0
	}
	return ticks(f[11]) + ticks(f[12])
}

func machine() map[string]string {
	m := map[string]string{"go": runtime.Version(), "cpus": strconv.Itoa(runtime.NumCPU()), "os": runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m["cpu"] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if line, _, ok := strings.Cut(string(b), "\n"); ok {
			m["memory"] = strings.Join(strings.Fields(strings.TrimPrefix(line, "MemTotal:")), " ")
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	return m
}

// startPerf records a call-graph profile of pid with perf while the load
// runs, into o.perfDir/NAME.perf.data; read it with
// perf report -i FILE --no-children. It does nothing without -perf.
func startPerf(o options, pid int, name string) (stop func()) {
	if o.perfDir == "" {
		return func() {}
	}
	if err := os.MkdirAll(o.perfDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "bench: perf:", err)
		return func() {}
	}
	out := filepath.Join(o.perfDir, name+".perf.data")
	cmd := exec.Command("perf", "record", "-q", "-F", "499", "-g", "-p", strconv.Itoa(pid), "-o", out)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "bench: perf:", err)
		return func() {}
	}
	return func() {
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
		fmt.Fprintln(os.Stderr, "bench: profile written to", out)
	}
}
