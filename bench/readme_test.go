package main

import (
	"bytes"
	"os"
	"testing"
)

// TestREADMEIsBenchOutput checks that the README's Performance figures are
// the benchmark's own output for the results committed in readme.json, not
// numbers edited by hand.
func TestREADMEIsBenchOutput(t *testing.T) {
	rep, err := readReport("readme.json")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	want, err := spliceReadme(readme, renderReadme(rep))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readme, want) {
		t.Error("README.md's Performance section differs from what bench/readme.json renders to; " +
			"rerun the benchmark with -json bench/readme.json -readme README.md, or go run ./bench -render bench/readme.json -readme README.md")
	}
}

func TestSpliceReadmeNeedsMarkers(t *testing.T) {
	if _, err := spliceReadme([]byte("# no markers\n"), []byte("x\n")); err == nil {
		t.Error("a README without markers was accepted")
	}
	got, err := spliceReadme([]byte("a\n"+readmeBegin+"old\n"+readmeEnd+"b\n"), []byte("\nnew\n"))
	if err != nil || string(got) != "a\n"+readmeBegin+"new\n"+readmeEnd+"b\n" {
		t.Errorf("splice gave %q, %v", got, err)
	}
}
