//go:build !linux

package spool

import "math"

// FreeBytes does not know the room left where statfs(2) is not at hand:
// it reports plenty, so that preallocation goes ahead.
func (osFS) FreeBytes(string) (int64, error) { return math.MaxInt64, nil }

// Datasync is fsync where fdatasync(2) is not at hand.
func (f osFile) Datasync() error { return f.Sync() }
