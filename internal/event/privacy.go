package event

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/netip"
	"strings"
	"sync"
	"unicode/utf8"
)

// IPMode says what is kept of a client's IP address.
type IPMode string

// The IP modes.
const (
	IPFull     IPMode = "full"     // the address as seen
	IPTruncate IPMode = "truncate" // IPv4 to its /24, IPv6 to its /48
	IPHash     IPMode = "hash"     // HMAC-SHA256 of the address, hex, keyed by a secret
	IPDrop     IPMode = "drop"     // nothing
)

// ParseIPMode parses one of the IP mode names.
func ParseIPMode(s string) (IPMode, error) {
	switch m := IPMode(s); m {
	case IPFull, IPTruncate, IPHash, IPDrop:
		return m, nil
	}
	return "", fmt.Errorf("unknown IP mode %q (want full, truncate, hash or drop)", s)
}

// DefaultSanitizeParams are the query parameters removed from url and
// referrer unless the operator names others.
var DefaultSanitizeParams = []string{
	"token", "access_token", "id_token", "refresh_token",
	"password", "passwd", "pwd",
	"api_key", "apikey", "secret", "client_secret",
	"auth", "authorization", "session", "sessionid", "email",
}

// Policy is the privacy policy applied to every event.
type Policy struct {
	RespectDNT     bool           // drop events from requests with DNT: 1 or Sec-GPC: 1
	IPMode         IPMode         // what to keep of the client IP
	IPHashSecret   []byte         // HMAC key for IPHash; required in that mode
	TrustProxy     bool           // take the client IP from X-Forwarded-For
	TrustedProxies []netip.Prefix // proxies skipped when walking X-Forwarded-For
	SanitizeParams []string       // query parameters removed from url and referrer
}

// Normalizer builds events from requests under a privacy policy. It is safe
// for concurrent use.
type Normalizer struct {
	policy   Policy
	sanitize map[string]struct{}
	// mayName marks the first bytes of a query key that may unescape and
	// lower-case to one of sanitize's names: the names' first bytes in
	// both cases, '%', '+', and every byte from 0x80 (strings.ToLower
	// makes "\u212Aey" "key"). A key starting with another byte is none.
	mayName [256]bool
	hashes  sync.Pool // of hash.Hash, keyed by the policy's secret
	second  secondCache
}

// NewNormalizer checks the policy and returns a Normalizer for it.
func NewNormalizer(p Policy) (*Normalizer, error) {
	if _, err := ParseIPMode(string(p.IPMode)); err != nil {
		return nil, err
	}
	if p.IPMode == IPHash && len(p.IPHashSecret) == 0 {
		return nil, errors.New("IP mode hash needs a secret")
	}
	n := &Normalizer{policy: p, sanitize: make(map[string]struct{}, len(p.SanitizeParams))}
	for _, name := range p.SanitizeParams {
		n.sanitize[strings.ToLower(name)] = struct{}{}
	}
	for c := range n.mayName {
		n.mayName[c] = c >= utf8.RuneSelf || c == '%' || c == '+'
	}
	for name := range n.sanitize {
		if name != "" {
			c := name[0]
			n.mayName[c] = true
			if 'a' <= c && c <= 'z' {
				n.mayName[c-'a'+'A'] = true
			}
		}
	}
	secret := p.IPHashSecret
	n.hashes.New = func() any { return hmac.New(sha256.New, secret) }
	return n, nil
}

// DoNotTrack reports whether a request with these DNT and Sec-GPC header
// values must be dropped under the policy.
func (n *Normalizer) DoNotTrack(dnt, gpc string) bool {
	return n.policy.RespectDNT && (strings.TrimSpace(dnt) == "1" || strings.TrimSpace(gpc) == "1")
}

// ClientIP picks the client's address from the peer address and the
// X-Forwarded-For values, then applies the IP mode. X-Forwarded-For is read
// only when the policy trusts a proxy and the peer is one of the trusted
// proxies (any peer, when none are listed); the client is then the
// right-most address that is not a trusted proxy.
func (n *Normalizer) ClientIP(remoteAddr string, xff []string) string {
	if n.policy.IPMode == IPDrop {
		return ""
	}
	addr, ok := n.ClientAddr(remoteAddr, xff)
	if !ok {
		return ""
	}
	return n.mask(addr)
}

// ClientAddr returns the client's address as TRUST_PROXY and
// TRUSTED_PROXIES choose it, before IP_MODE: for per-address rate limits
// and lookups that must not leave the process. ok is false when
// remoteAddr holds no address.
func (n *Normalizer) ClientAddr(remoteAddr string, xff []string) (addr netip.Addr, ok bool) {
	addr, ok = parseAddr(remoteAddr)
	if !ok {
		return netip.Addr{}, false
	}
	if n.policy.TrustProxy && len(xff) > 0 && n.trusted(addr, true) {
		addr = n.fromForwarded(addr, xff)
	}
	return addr, true
}

// MaskAddr returns a, from ClientAddr, under IP_MODE: what the event's ip
// field holds.
func (n *Normalizer) MaskAddr(a netip.Addr) string { return n.mask(a) }

func (n *Normalizer) fromForwarded(peer netip.Addr, xff []string) netip.Addr {
	client := peer
	for i := len(xff) - 1; i >= 0; i-- {
		hops := xff[i]
		for hops != "" {
			var hop string
			if j := strings.LastIndexByte(hops, ','); j >= 0 {
				hop, hops = hops[j+1:], hops[:j]
			} else {
				hop, hops = hops, ""
			}
			a, ok := parseAddr(strings.TrimSpace(hop))
			if !ok {
				return client // a garbled hop ends what can be believed
			}
			client = a
			if !n.trusted(a, false) {
				return client
			}
		}
	}
	return client
}

// trusted reports whether a is a trusted proxy. With no list, only the
// direct peer is trusted.
func (n *Normalizer) trusted(a netip.Addr, peer bool) bool {
	if len(n.policy.TrustedProxies) == 0 {
		return peer
	}
	for _, p := range n.policy.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func parseAddr(s string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

func (n *Normalizer) mask(a netip.Addr) string {
	switch n.policy.IPMode {
	case IPFull:
		return a.String()
	case IPTruncate:
		bits := 24
		if a.Is6() {
			bits = 48
		}
		p, _ := a.Prefix(bits)
		return p.Addr().String()
	case IPHash:
		h := n.hashes.Get().(hash.Hash)
		h.Reset()
		b := a.As16()
		h.Write(b[:])
		var sum [sha256.Size]byte
		s := hex.EncodeToString(h.Sum(sum[:0]))
		n.hashes.Put(h)
		return s
	}
	return ""
}

// SanitizeURL removes the policy's secret query parameters from the query
// and from a query-like fragment (as OAuth's implicit flow leaves there).
// The other parameters keep their order and their encoding.
func (n *Normalizer) SanitizeURL(u string) string {
	q := strings.IndexByte(u, '?')
	f := strings.IndexByte(u, '#')
	if (q < 0 && f < 0) || len(n.sanitize) == 0 {
		return u
	}
	base, query, frag := u, "", ""
	if f >= 0 {
		base, frag = u[:f], u[f+1:]
	}
	if q >= 0 && (f < 0 || q < f) {
		query = base[q+1:]
		base = base[:q]
	}
	hasQuery := q >= 0 && (f < 0 || q < f)
	kept, keptFrag := query, frag
	if hasQuery {
		kept = n.sanitizeQuery(query)
	}
	if f >= 0 && strings.IndexByte(frag, '=') >= 0 {
		keptFrag = n.sanitizeQuery(frag)
	}
	if (!hasQuery || kept != "" && kept == query) && keptFrag == frag {
		return u // nothing to remove (an empty query's '?' is): no copy
	}
	var b strings.Builder
	b.Grow(len(u))
	b.WriteString(base)
	if hasQuery && kept != "" {
		b.WriteByte('?')
		b.WriteString(kept)
	}
	if f >= 0 {
		b.WriteByte('#')
		b.WriteString(keptFrag)
	}
	return b.String()
}

func (n *Normalizer) sanitizeQuery(q string) string {
	if !n.hasSecret(q) {
		return q
	}
	var b strings.Builder
	for pair := range strings.SplitSeq(q, "&") {
		key, _, _ := strings.Cut(pair, "=")
		if k, err := unescape(key); err == nil {
			key = k
		}
		if _, bad := n.sanitize[strings.ToLower(key)]; bad {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(pair)
	}
	return b.String()
}

func (n *Normalizer) hasSecret(q string) bool {
	for {
		pair, rest := q, ""
		i := strings.IndexByte(q, '&')
		if i >= 0 {
			pair, rest = q[:i], q[i+1:]
		}
		// Most keys start with a byte no name starts with: no unescaping,
		// lower-casing and lookup for them. An empty key ("", "=v") is
		// looked up: "" may be a name.
		if pair == "" || pair[0] == '=' || n.mayName[pair[0]] {
			key, _, _ := strings.Cut(pair, "=")
			if k, err := unescape(key); err == nil {
				key = k
			}
			if _, bad := n.sanitize[strings.ToLower(key)]; bad {
				return true
			}
		}
		if i < 0 {
			return false
		}
		q = rest
	}
}
