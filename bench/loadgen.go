package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// load is the result of one load run.
type load struct {
	Requests int64         // responses read
	OK       int64         // 2xx responses
	Errors   int64         // connection and protocol errors
	Elapsed  time.Duration // from the first request to the last response
	Latency  *hist
}

// runLoad keeps conns connections busy for d, each sending req (a complete
// HTTP/1.1 request) again as soon as the response to the last one has been
// read, as wrk does. When d is up, every connection finishes the request it
// has under way before it stops, so every response the server sent is
// counted: that is what makes the loss accounting exact.
func runLoad(addr string, req []byte, conns int, d time.Duration) load {
	var (
		mu    sync.Mutex
		total = load{Latency: &hist{}}
		wg    sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for range conns {
		wg.Go(func() {
			r := connLoad(addr, req, deadline)
			mu.Lock()
			total.Requests += r.Requests
			total.OK += r.OK
			total.Errors += r.Errors
			total.Latency.merge(r.Latency)
			mu.Unlock()
		})
	}
	wg.Wait()
	total.Elapsed = time.Since(start)
	return total
}

func connLoad(addr string, req []byte, deadline time.Time) load {
	r := load{Latency: &hist{}}
	var (
		conn net.Conn
		br   *bufio.Reader
	)
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for time.Now().Before(deadline) {
		if conn == nil {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				r.Errors++
				time.Sleep(10 * time.Millisecond)
				continue
			}
			conn, br = c, bufio.NewReaderSize(c, 16<<10)
		}
		t0 := time.Now()
		conn.SetDeadline(t0.Add(30 * time.Second))
		status, keepAlive, err := roundTrip(conn, br, req)
		if err != nil {
			r.Errors++
			conn.Close()
			conn = nil
			continue
		}
		r.Latency.add(time.Since(t0))
		r.Requests++
		if status/100 == 2 {
			r.OK++
		}
		if !keepAlive {
			conn.Close()
			conn = nil
		}
	}
	return r
}

var (
	crlf          = []byte("\r\n")
	contentLength = []byte("content-length:")
	connClose     = []byte("connection: close")
)

// roundTrip writes req and reads one response, discarding its body.
func roundTrip(w io.Writer, br *bufio.Reader, req []byte) (status int, keepAlive bool, err error) {
	if _, err := w.Write(req); err != nil {
		return 0, false, err
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, false, fmt.Errorf("bad status line %q", line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, err
	}
	length, keepAlive := -1, true
	for {
		h, err := br.ReadSlice('\n')
		if err != nil {
			return 0, false, err
		}
		if bytes.Equal(h, crlf) {
			break
		}
		lower := bytes.ToLower(bytes.TrimRight(h, "\r\n"))
		if v, ok := bytes.CutPrefix(lower, contentLength); ok {
			if length, err = strconv.Atoi(string(bytes.TrimSpace(v))); err != nil {
				return 0, false, err
			}
		}
		if bytes.Equal(lower, connClose) {
			keepAlive = false
		}
	}
	if length < 0 {
		return 0, false, errors.New("response without Content-Length")
	}
	if _, err := br.Discard(length); err != nil {
		return 0, false, err
	}
	return status, keepAlive, nil
}
