package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/gotrack/gotrack/internal/spool"
)

// spoolCmd is `gotrack spool verify DIR`: it checks every segment and cursor
// of a spool that no GoTrack is running on, prints what it found, and
// returns an error (so the exit status is not zero) when anything is
// damaged.
func spoolCmd(args []string, stdout, stderr io.Writer) error {
	usage := func() {
		fmt.Fprintln(stderr, "Usage: gotrack spool verify DIR")
		fmt.Fprintln(stderr, "\nChecks every segment and cursor of the spool in DIR without changing it, and")
		fmt.Fprintln(stderr, "reports records, corrupt spans and each sink's lag. Stop GoTrack first.")
		fmt.Fprintln(stderr, "Exits with status 1 when it finds damage or cannot read the spool.")
	}
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		usage()
		return nil
	}
	if len(args) != 2 || args[0] != "verify" {
		usage()
		return errors.New("spool: want: gotrack spool verify DIR")
	}
	rep, err := spool.Verify(args[1])
	if err != nil {
		return err
	}
	rep.Print(stdout)
	if rep.Damaged() {
		return fmt.Errorf("%w in %s (see above)", spool.ErrDamaged, args[1])
	}
	return nil
}
