package spool

import (
	"fmt"
	"os"
)

// fileSystem is the file operations the spool makes when it writes and
// recovers segments. It exists so that tests can make the faults a disk
// makes (short writes, EIO, ENOSPC, a failed fsync or fdatasync, a nearly
// full disk) on demand; in production it is osFS. The append path calls it
// once per write round (one write, one fdatasync or fsync for a whole
// group commit), never per record, so the indirection costs nothing
// measurable.
type fileSystem interface {
	OpenFile(name string, flag int, perm os.FileMode) (file, error)
	ReadFile(name string) ([]byte, error)
	Truncate(name string, size int64) error
	Rename(oldpath, newpath string) error
	Remove(name string) error
	MkdirAll(path string, perm os.FileMode) error
	SyncDir(dir string) error
	FreeBytes(dir string) (int64, error) // room left on dir's file system for an unprivileged writer
}

// file is an open segment (or a file recovery writes).
type file interface {
	Write(b []byte) (int, error)
	WriteAt(b []byte, off int64) (int, error) // preallocation only: records go through Write
	Sync() error
	Truncate(size int64) error
	Stat() (os.FileInfo, error)
	Close() error
}

// osFS is the real file system.
type osFS struct{}

func (osFS) OpenFile(name string, flag int, perm os.FileMode) (file, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err // not a typed nil in an interface
	}
	return osFile{f}, nil
}

// osFile is a real file, which can also be synced with fdatasync.
type osFile struct{ *os.File }

// datasyncer is a file that can flush its data without the metadata that
// retrieving it does not need (fdatasync). The spool uses it only for a
// write that does not change the file's size (see Spool.syncRound); any
// other write, and any file that cannot fdatasync, is synced with Sync
// (fsync).
type datasyncer interface {
	Datasync() error
}

func (osFS) ReadFile(name string) ([]byte, error)         { return os.ReadFile(name) }
func (osFS) Truncate(name string, size int64) error       { return os.Truncate(name, size) }
func (osFS) Rename(oldpath, newpath string) error         { return os.Rename(oldpath, newpath) }
func (osFS) Remove(name string) error                     { return os.Remove(name) }
func (osFS) MkdirAll(path string, perm os.FileMode) error { return os.MkdirAll(path, perm) }

func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// writeFileSync writes a whole file and syncs it, so that it is complete on
// disk before anything relies on it.
func writeFileSync(fsys fileSystem, path string, b []byte) error {
	f, err := fsys.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	n, err := f.Write(b)
	if err == nil && n < len(b) {
		err = fmt.Errorf("short write: %d of %d bytes", n, len(b))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
