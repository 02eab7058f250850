// Package enrich derives what GoTrack adds to events from their request:
// the parsed user agent, a bot verdict with its reasons, and the client
// address's location and network from MaxMind databases. It flags; it
// never drops, unless the operator chose BOT_POLICY=drop.
package enrich

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/mileusna/useragent"
	"github.com/oschwald/maxminddb-golang/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotrack/gotrack/internal/event"
)

// BotPolicy is BOT_POLICY.
type BotPolicy string

// The bot policies.
const (
	BotFlag BotPolicy = "flag" // keep bots' events, flagged
	BotDrop BotPolicy = "drop" // drop them, counted by reason
)

// ParseBotPolicy parses BOT_POLICY.
func ParseBotPolicy(v string) (BotPolicy, error) {
	switch p := BotPolicy(v); p {
	case BotFlag, BotDrop:
		return p, nil
	}
	return "", errors.New("is not flag or drop; want flag or drop")
}

// The parts of ENRICH.
const (
	PartUA       = "ua"
	PartBot      = "bot"
	PartCampaign = "campaign"
)

// Parts are the names ENRICH takes, besides none.
var Parts = []string{PartUA, PartBot, PartCampaign}

// Bot reasons, in the order they are listed in an event.
const (
	ReasonCrawler        = "crawler"         // a declared crawler (Googlebot, bingbot, ...) or a UA naming itself a bot, crawler or spider
	ReasonAutomation     = "automation"      // an HTTP library or tool (curl, python-requests, Go-http-client, ...)
	ReasonHeadless       = "headless"        // a headless browser (HeadlessChrome, PhantomJS)
	ReasonNoUserAgent    = "no_user_agent"   // no User-Agent header at all
	ReasonMissingHeaders = "missing_headers" // claims a browser but lacks Accept-Language or Accept-Encoding, which browsers always send
	ReasonDatacenter     = "datacenter"      // the address is in a hosting provider's network (needs GEOIP_ASN_DB)
)

// Reasons lists every bot reason.
var Reasons = []string{ReasonCrawler, ReasonAutomation, ReasonHeadless, ReasonNoUserAgent, ReasonMissingHeaders, ReasonDatacenter}

// Options configure an Enricher.
type Options struct {
	UA, Bot, Campaign bool
	BotPolicy         BotPolicy
	GeoIPDB           string // GEOIP_DB, a City (or Country) mmdb; "" for none
	GeoIPASNDB        string // GEOIP_ASN_DB, an ASN mmdb; "" for none
}

// Enricher enriches requests. It is safe for concurrent use.
type Enricher struct {
	opts    Options
	log     *slog.Logger
	cache   *uaCache
	geo     atomic.Pointer[maxminddb.Reader]
	asn     atomic.Pointer[maxminddb.Reader]
	flagged *prometheus.CounterVec
	dropped *prometheus.CounterVec
	// The children of flagged, or of dropped under BOT_POLICY=drop, by
	// reason, resolved once: WithLabelValues hashes and locks per call.
	counted map[string]prometheus.Counter
	reloads *prometheus.CounterVec
	mu      sync.Mutex // serialises Reload
}

// New opens the databases and registers the metrics on reg. A database
// that cannot be read is an error.
func New(opts Options, reg prometheus.Registerer, log *slog.Logger) (*Enricher, error) {
	x := &Enricher{opts: opts, log: log, cache: newUACache(UACacheSize)}
	x.flagged = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gotrack_bot_events_total",
		Help: "Events flagged as from a bot, by reason (crawler, automation, headless, no_user_agent, missing_headers, datacenter); an event with several reasons counts once under each.",
	}, []string{"reason"})
	x.dropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gotrack_bot_events_dropped_total",
		Help: "Events dropped under BOT_POLICY=drop, by reason; an event with several reasons counts once under each.",
	}, []string{"reason"})
	x.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gotrack_geoip_reloads_total",
		Help: "Reloads of GEOIP_DB and GEOIP_ASN_DB on SIGHUP, by db (geo, asn) and result (success, failure); a failure keeps the database in use.",
	}, []string{"db", "result"})
	for _, c := range []prometheus.Collector{x.flagged, x.dropped, x.reloads} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	x.counted = make(map[string]prometheus.Counter, len(Reasons))
	for _, r := range Reasons {
		x.flagged.WithLabelValues(r)
		x.dropped.WithLabelValues(r)
		x.counted[r] = x.counter(r)
	}
	var errs []error
	for _, d := range x.dbs() {
		if d.path == "" {
			continue
		}
		x.reloads.WithLabelValues(d.name, "success")
		x.reloads.WithLabelValues(d.name, "failure")
		r, err := OpenDB(d.path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		d.ptr.Store(r)
	}
	return x, errors.Join(errs...)
}

type db struct {
	name, path string
	ptr        *atomic.Pointer[maxminddb.Reader]
}

func (x *Enricher) dbs() []db {
	return []db{{"geo", x.opts.GeoIPDB, &x.geo}, {"asn", x.opts.GeoIPASNDB, &x.asn}}
}

// MaxDBBytes bounds an mmdb file: GeoLite2-City is some 60 MiB.
const MaxDBBytes = 1 << 30

// OpenDB reads an mmdb file whole into memory and checks it. Reading it,
// rather than mapping it, lets a reload replace the reader while lookups
// still use the old one: the garbage collector frees it when they are done.
func OpenDB(path string) (*maxminddb.Reader, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("geoip: %w", err)
	}
	if fi.Size() > MaxDBBytes {
		return nil, fmt.Errorf("geoip: %s is larger than %d bytes", path, MaxDBBytes)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("geoip: %w", err)
	}
	r, err := maxminddb.OpenBytes(b)
	if err != nil {
		return nil, fmt.Errorf("geoip: %s is not a MaxMind database: %w", path, err)
	}
	return r, nil
}

// Reload reads the databases again. One that fails keeps the one in use,
// is logged and counted, and its error returned.
func (x *Enricher) Reload() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	var errs []error
	for _, d := range x.dbs() {
		if d.path == "" {
			continue
		}
		r, err := OpenDB(d.path)
		if err != nil {
			x.reloads.WithLabelValues(d.name, "failure").Inc()
			x.log.Error("geoip reload failed; the database in use stays", "db", d.name, "path", d.path, "err", err)
			errs = append(errs, err)
			continue
		}
		d.ptr.Store(r)
		x.reloads.WithLabelValues(d.name, "success").Inc()
		x.log.Info("geoip database reloaded", "db", d.name, "path", d.path)
	}
	return errors.Join(errs...)
}

// Campaign reports whether events get their campaign parsed from url.
func (x *Enricher) Campaign() bool { return x.opts.Campaign }

// Request returns the enrichment of r's events; addr is the client address
// as TRUST_PROXY chose it, before IP_MODE (ok false when there is none).
// It returns nil when there is nothing to add.
func (x *Enricher) Request(r *http.Request, addr netip.Addr, ok bool) *event.Enrichment {
	if !x.opts.UA && !x.opts.Bot && x.geo.Load() == nil && x.asn.Load() == nil {
		return nil
	}
	uaHeader := first(r.Header["User-Agent"])
	var ue *uaEntry
	if x.opts.UA || x.opts.Bot {
		ue = x.cache.get(truncate(uaHeader, event.MaxUserAgentLen))
	}
	if ue != nil && !ok || x.geo.Load() == nil && x.asn.Load() == nil {
		// Without the address's lookups, only the headers can add a reason.
		if !x.opts.Bot || !x.missingHeaders(r, uaHeader, ue) {
			return x.shared(ue)
		}
		if ue != nil {
			return x.sharedMissingHeaders(ue)
		}
	}
	en := new(event.Enrichment)
	if x.opts.UA {
		en.UA = ue.ua
	}
	if ok {
		en.Geo = x.lookupGeo(addr)
		en.ASN = x.lookupASN(addr)
	}
	if x.opts.Bot {
		en.Bot = ue.bot
		var extra []string
		if x.missingHeaders(r, uaHeader, ue) {
			extra = append(extra, ReasonMissingHeaders)
		}
		if en.ASN != nil && datacenterASN[en.ASN.Number] {
			extra = append(extra, ReasonDatacenter)
		}
		if extra != nil {
			reasons := append(slices.Clip(ue.bot.Reasons), extra...)
			en.Bot = &event.Bot{IsBot: true, Reasons: reasons}
		}
	}
	return en
}

// missingHeaders reports whether r claims a browser but lacks a header
// that browsers always send.
func (x *Enricher) missingHeaders(r *http.Request, uaHeader string, ue *uaEntry) bool {
	return uaHeader != "" && ue.claimsBrowser && (len(r.Header["Accept-Language"]) == 0 || len(r.Header["Accept-Encoding"]) == 0)
}

// shared returns the enrichment of ue alone, built once per entry.
func (x *Enricher) shared(ue *uaEntry) *event.Enrichment {
	if ue == nil {
		return nil
	}
	if en := ue.en.Load(); en != nil {
		return en
	}
	en := new(event.Enrichment)
	if x.opts.UA {
		en.UA = ue.ua
	}
	if x.opts.Bot {
		en.Bot = ue.bot
	}
	ue.en.Store(en)
	return en
}

// sharedMissingHeaders returns the enrichment of ue for a request that
// lacks the headers its browser would send, built once per entry: such
// requests come in runs, from the same scripts.
func (x *Enricher) sharedMissingHeaders(ue *uaEntry) *event.Enrichment {
	if en := ue.enMissing.Load(); en != nil {
		return en
	}
	en := new(event.Enrichment)
	if x.opts.UA {
		en.UA = ue.ua
	}
	en.Bot = &event.Bot{IsBot: true, Reasons: append(slices.Clip(ue.bot.Reasons), ReasonMissingHeaders)}
	ue.enMissing.Store(en)
	return en
}

// Count counts n events of en as flagged, or, under BOT_POLICY=drop,
// dropped; it reports whether they are to be dropped.
func (x *Enricher) Count(en *event.Enrichment, n int) (drop bool) {
	if en == nil || en.Bot == nil || !en.Bot.IsBot || n == 0 {
		return false
	}
	for _, r := range en.Bot.Reasons {
		c, ok := x.counted[r]
		if !ok { // every reason is in Reasons: not reached
			c = x.counter(r)
		}
		c.Add(float64(n))
	}
	return x.opts.BotPolicy == BotDrop
}

// counter returns the counter of reason r: flagged, or under
// BOT_POLICY=drop, dropped.
func (x *Enricher) counter(r string) prometheus.Counter {
	if x.opts.BotPolicy == BotDrop {
		return x.dropped.WithLabelValues(r)
	}
	return x.flagged.WithLabelValues(r)
}

type geoRecord struct {
	Country struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"country"`
	Subdivisions []struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"subdivisions"`
	City struct {
		Names struct {
			EN string `maxminddb:"en"`
		} `maxminddb:"names"`
	} `maxminddb:"city"`
}

func (x *Enricher) lookupGeo(a netip.Addr) *event.Geo {
	r := x.geo.Load()
	if r == nil {
		return nil
	}
	var rec geoRecord
	res := r.Lookup(a)
	if !res.Found() || res.Decode(&rec) != nil {
		return nil
	}
	g := &event.Geo{Country: rec.Country.ISOCode, City: rec.City.Names.EN}
	if len(rec.Subdivisions) > 0 {
		g.Region = rec.Subdivisions[0].ISOCode
	}
	if *g == (event.Geo{}) {
		return nil
	}
	return g
}

type asnRecord struct {
	Number uint32 `maxminddb:"autonomous_system_number"`
	Org    string `maxminddb:"autonomous_system_organization"`
}

func (x *Enricher) lookupASN(a netip.Addr) *event.ASN {
	r := x.asn.Load()
	if r == nil {
		return nil
	}
	var rec asnRecord
	res := r.Lookup(a)
	if !res.Found() || res.Decode(&rec) != nil || rec.Number == 0 {
		return nil
	}
	return &event.ASN{Number: rec.Number, Org: rec.Org}
}

// datacenterASN are networks of hosting and cloud providers, from which
// people rarely browse: Amazon (16509, 14618), Google Cloud (396982),
// Microsoft (8075), DigitalOcean (14061), OVH (16276), Hetzner (24940),
// Linode/Akamai (63949), Vultr (20473), Alibaba (45102), Oracle (31898),
// Tencent (132203), Contabo (51167), Scaleway (12876), Leaseweb (60781),
// M247 (9009).
var datacenterASN = map[uint32]bool{
	16509: true, 14618: true, 396982: true, 8075: true, 14061: true, 16276: true, 24940: true,
	63949: true, 20473: true, 45102: true, 31898: true, 132203: true, 51167: true, 12876: true,
	60781: true, 9009: true,
}

// uaEntry is what a User-Agent string tells, computed once per string.
type uaEntry struct {
	ua            *event.UA
	bot           *event.Bot // from the string alone
	claimsBrowser bool       // Mozilla/..., as every browser's UA starts
	// en is the enrichment of a request with nothing more to add, built
	// on first use and shared after; enMissing, that of a request that
	// lacks headers browsers send, with no address lookups.
	en, enMissing atomic.Pointer[event.Enrichment]
}

var notBot = &event.Bot{IsBot: false, Reasons: []string{}}

// automation are lower-case prefixes of HTTP libraries' and tools' UAs.
var automation = []string{
	"curl/", "wget/", "python-requests/", "python-urllib/", "python-httpx/", "python/", "aiohttp/",
	"go-http-client/", "java/", "okhttp/", "apache-httpclient/", "axios/", "node-fetch/", "node/",
	"undici", "libwww-perl/", "lwp::", "scrapy/", "httpie/", "postmanruntime/", "insomnia/",
	"guzzlehttp/", "ruby", "php/", "powershell/", "wrk", "ab/", "k6/", "hey/", "bombardier",
}

func parseUA(s string) *uaEntry {
	if s == "" {
		return &uaEntry{ua: &event.UA{Device: "unknown"}, bot: &event.Bot{IsBot: true, Reasons: []string{ReasonNoUserAgent}}}
	}
	p := useragent.Parse(s)
	lower := strings.ToLower(s)
	e := &uaEntry{claimsBrowser: strings.HasPrefix(s, "Mozilla/")}
	var reasons []string
	headless := p.Name == useragent.HeadlessChrome || strings.Contains(lower, "headless") || strings.Contains(lower, "phantomjs")
	auto := false
	for _, a := range automation {
		if strings.HasPrefix(lower, a) {
			auto = true
			break
		}
	}
	// "bot" anywhere marks a crawler, but for the brand of phones (Cubot)
	// whose browsers are people.
	crawler := !headless && (p.Bot || strings.Contains(strings.ReplaceAll(lower, "cubot", ""), "bot") || strings.Contains(lower, "crawler") ||
		strings.Contains(lower, "spider") || strings.Contains(lower, "slurp"))
	if crawler {
		reasons = append(reasons, ReasonCrawler)
	}
	if auto {
		reasons = append(reasons, ReasonAutomation)
	}
	if headless {
		reasons = append(reasons, ReasonHeadless)
	}
	device := "unknown"
	switch {
	case crawler || auto:
		device = "bot"
	case p.Tablet:
		device = "tablet"
	case p.Mobile:
		device = "mobile"
	case p.Desktop:
		device = "desktop"
	}
	e.ua = &event.UA{Browser: p.Name, Version: p.Version, OS: p.OS, OSVersion: p.OSVersion, Device: device}
	e.bot = notBot
	if reasons != nil {
		e.bot = &event.Bot{IsBot: true, Reasons: reasons}
	}
	return e
}

// UACacheSize bounds the user agents whose parse is kept: two generations
// of half as many each. A key is at most MaxUserAgentLen (512) bytes, so
// the cache holds at most some 6 MiB.
const UACacheSize = 8192

// uaCache keeps parses in two generations: when the current one is full it
// becomes the previous one, and the previous one is forgotten. A hit in
// the previous generation moves the entry to the current one.
type uaCache struct {
	mu        sync.RWMutex
	cur, prev map[string]*uaEntry
	genMax    int
}

func newUACache(size int) *uaCache {
	return &uaCache{cur: map[string]*uaEntry{}, prev: map[string]*uaEntry{}, genMax: size / 2}
}

func (c *uaCache) get(ua string) *uaEntry {
	c.mu.RLock()
	e := c.cur[ua]
	c.mu.RUnlock()
	if e != nil {
		return e
	}
	c.mu.RLock()
	e = c.prev[ua]
	c.mu.RUnlock()
	if e == nil {
		e = parseUA(ua)
	}
	c.mu.Lock()
	if len(c.cur) >= c.genMax {
		c.prev, c.cur = c.cur, make(map[string]*uaEntry, c.genMax)
	}
	c.cur[strings.Clone(ua)] = e
	c.mu.Unlock()
	return e
}

func (c *uaCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.cur) + len(c.prev)
}

// truncate cuts s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}
