package main

import (
	"fmt"
	"net"
	"os"
)

// listen binds addr and prints the bound address on stdout, so that the
// benchmark can start the baseline on port 0.
func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	fmt.Fprintln(os.Stdout, ln.Addr().String())
	return ln, nil
}
