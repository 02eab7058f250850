//go:build !linux

package spool

// Datasync is fsync where fdatasync(2) is not at hand.
func (f osFile) Datasync() error { return f.Sync() }
