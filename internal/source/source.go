// Package source holds GoTrack's sources: who may write events, with which
// write keys, from which browser origins, and how fast. It reads
// SOURCES_FILE, authenticates requests against it, and reloads it
// atomically.
package source

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// Anonymous is the source_id of every event under AUTH_MODE=open.
const Anonymous = "anonymous"

// Unknown is the source label of a metric when the request named no source
// of the file, so that label values come from the file only.
const Unknown = "unknown"

// MaxFileBytes bounds SOURCES_FILE.
const MaxFileBytes = 1 << 20

var validID = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

// Source is one entry of SOURCES_FILE, checked. A Source is not modified
// once its Set is built, so it may be shared between goroutines.
type Source struct {
	ID      string
	Origins []string // browser origins allowed, as scheme://host[:port]
	// Rate is the source's token bucket refill, in requests per second;
	// 0 means no limit. Burst is the bucket's size.
	Rate  float64
	Burst int
	// Secret is the signing secret; when not nil every request of the
	// source must be signed.
	Secret []byte
}

// AllowsOrigin reports whether origin is one of the source's origins.
func (s *Source) AllowsOrigin(origin string) bool {
	return origin != "" && slices.Contains(s.Origins, origin)
}

// Set is the sources of one version of SOURCES_FILE.
type Set struct {
	sources  []*Source
	byID     map[string]*Source
	byDigest map[[sha256.Size]byte]*Source
	digests  map[*Source][][sha256.Size]byte
}

// Len is the number of sources.
func (s *Set) Len() int { return len(s.sources) }

// IDs returns the source ids, in file order.
func (s *Set) IDs() []string {
	ids := make([]string, len(s.sources))
	for i, src := range s.sources {
		ids[i] = src.ID
	}
	return ids
}

// ByID returns the source with id, or nil.
func (s *Set) ByID(id string) *Source { return s.byID[id] }

// Lookup returns the source of write key key, or nil. Keys are never
// compared as they are: the map is keyed by the key's SHA-256 digest, and
// the digest found is compared again in constant time, so the time taken
// depends on the digest of what the client sent, never on how much of a
// real key it guessed.
func (s *Set) Lookup(key string) *Source {
	if key == "" {
		return nil
	}
	d := sha256.Sum256([]byte(key))
	src := s.byDigest[d]
	if src == nil {
		return nil
	}
	for _, want := range s.digests[src] {
		if subtle.ConstantTimeCompare(d[:], want[:]) == 1 {
			return src
		}
	}
	return nil
}

// fileSource is one source as written in the file.
type fileSource struct {
	ID                string   `json:"id"`
	WriteKeys         []string `json:"write_keys"`
	WriteKeySHA256    []string `json:"write_key_sha256"`
	Origins           []string `json:"origins"`
	Rate              string   `json:"rate"`
	Burst             *int     `json:"burst"`
	SigningSecretFile string   `json:"signing_secret_file"`
}

type file struct {
	Sources []fileSource `json:"sources"`
}

// LoadFile reads and checks the sources file at path. The error lists
// every problem found; it never quotes a key or a secret.
func LoadFile(path string) (*Set, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("sources: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("sources: read %s: %w", path, err)
	}
	if len(b) > MaxFileBytes {
		return nil, fmt.Errorf("sources: %s is larger than %d bytes; want a smaller file", path, MaxFileBytes)
	}
	return Parse(b, os.ReadFile)
}

// Parse checks the YAML content of a sources file, strictly: an unknown
// field, a duplicate id or key, an invalid id, origin or rate, and a
// secret file that cannot be read are all errors, listed together.
// readFile reads signing secret files.
func Parse(data []byte, readFile func(string) ([]byte, error)) (*Set, error) {
	var f file
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("sources: %w", err)
	}
	set := &Set{byID: map[string]*Source{}, byDigest: map[[sha256.Size]byte]*Source{}, digests: map[*Source][][sha256.Size]byte{}}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("sources: "+format, args...)) }
	if len(f.Sources) == 0 {
		bad("the file lists no source; want a list under sources:")
	}
	for i, fs := range f.Sources {
		name := fmt.Sprintf("source %d (%q)", i+1, fs.ID)
		if !validID.MatchString(fs.ID) {
			bad("%s: id is invalid; want [a-z0-9_-]{1,64}", name)
		}
		if fs.ID == Anonymous || fs.ID == Unknown {
			bad("%s: id %q is reserved; want another id", name, fs.ID)
		}
		src := &Source{ID: fs.ID}
		if _, dup := set.byID[fs.ID]; dup {
			bad("%s: duplicate id; want each id once", name)
		} else {
			set.byID[fs.ID] = src
		}
		var digests [][sha256.Size]byte
		for j, k := range fs.WriteKeys {
			if len(k) < 8 || strings.TrimSpace(k) != k {
				bad("%s: write_keys[%d] is too short or padded; want at least 8 characters, without surrounding spaces", name, j)
				continue
			}
			digests = append(digests, sha256.Sum256([]byte(k)))
		}
		for j, h := range fs.WriteKeySHA256 {
			b, err := hex.DecodeString(h)
			if err != nil || len(b) != sha256.Size {
				bad("%s: write_key_sha256[%d] is malformed; want 64 hex digits", name, j)
				continue
			}
			digests = append(digests, [sha256.Size]byte(b))
		}
		if len(digests) == 0 && len(fs.WriteKeys)+len(fs.WriteKeySHA256) == 0 {
			bad("%s: has no write_keys nor write_key_sha256; want at least one key", name)
		}
		for _, d := range digests {
			if other, dup := set.byDigest[d]; dup {
				bad("%s: a write key is also a key of source %q; want each key in one source, once", name, other.ID)
				continue
			}
			set.byDigest[d] = src
			set.digests[src] = append(set.digests[src], d)
		}
		for _, o := range fs.Origins {
			if n, ok := browserOrigin(o); ok {
				src.Origins = append(src.Origins, n)
			} else {
				bad("%s: origin %q is malformed; want scheme://host[:port], without path", name, o)
			}
		}
		if fs.Rate != "" {
			r, err := ParseRate(fs.Rate)
			if err != nil {
				bad("%s: rate %w", name, err)
			}
			src.Rate = r
			src.Burst = int(math.Max(1, math.Ceil(2*r)))
		}
		if fs.Burst != nil {
			switch {
			case fs.Rate == "":
				bad("%s: burst needs a rate; want rate set too", name)
			case *fs.Burst < 1 || *fs.Burst > 1_000_000:
				bad("%s: burst is out of range; want 1 to 1000000", name)
			default:
				src.Burst = *fs.Burst
			}
		}
		if fs.SigningSecretFile != "" {
			b, err := readFile(fs.SigningSecretFile)
			switch {
			case err != nil:
				bad("%s: signing_secret_file: %w; want a readable file", name, err)
			case len(bytes.TrimSpace(b)) < 16:
				bad("%s: signing_secret_file %s holds fewer than 16 bytes; want at least 16", name, fs.SigningSecretFile)
			default:
				src.Secret = bytes.TrimRight(b, "\r\n")
			}
		}
		set.sources = append(set.sources, src)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return set, nil
}

// browserOrigin checks that o is a browser origin, scheme://host[:port],
// and returns it as browsers send it in Origin (and begin Referer with):
// lower case, without the scheme's default port. Origins are compared as
// text, so "https://Shop.Example" or "https://shop.example:443" would
// otherwise be accepted and never match.
func browserOrigin(o string) (string, bool) {
	u, err := url.Parse(strings.ToLower(o))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil || u.Scheme+"://"+u.Host != strings.ToLower(o) {
		return "", false
	}
	host := u.Host
	if p := u.Port(); (u.Scheme == "https" && p == "443") || (u.Scheme == "http" && p == "80") {
		host = strings.TrimSuffix(host, ":"+p)
	}
	return u.Scheme + "://" + host, true
}

// ParseRate parses a rate such as 200/s, 600/m or 1000/h into events per
// second. The count must be positive and at most 1,000,000.
func ParseRate(v string) (float64, error) {
	n, unit, ok := strings.Cut(v, "/")
	count, err := strconv.ParseFloat(n, 64)
	if !ok || err != nil || count <= 0 || count > 1_000_000 || math.IsNaN(count) {
		return 0, fmt.Errorf("%q is not a rate; want COUNT/UNIT with a count from 1 to 1000000, such as 200/s, 600/m, 1000/h", v)
	}
	switch unit {
	case "s":
		return count, nil
	case "m":
		return count / 60, nil
	case "h":
		return count / 3600, nil
	}
	return 0, fmt.Errorf("%q has unit %q; want s, m or h", v, unit)
}
