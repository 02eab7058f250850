// Command healthcheck is the container image's health check: the image has
// no shell or curl, so this tiny static program asks GoTrack's /healthz.
//
//	healthcheck [URL]
//
// URL defaults to http://127.0.0.1:19890/healthz. It exits 0 when the
// answer is 200 within 3 seconds, and 1 otherwise, saying why on stderr.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	url := "http://127.0.0.1:19890/healthz"
	if len(os.Args) > 1 {
		url = os.Args[1]
	}
	if err := check(url); err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		os.Exit(1)
	}
}

func check(url string) error {
	client := &http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return nil
}
