package event

import (
	"strconv"
	"strings"
)

// Enrichment is what GoTrack derives from a request for every event it
// carries: the parsed user agent, the bot verdict, and the address's
// location and network. Each part is nil when it is off or unknown. An
// Enrichment is shared by the events of a request and must not be
// modified once given to the Normalizer.
type Enrichment struct {
	UA  *UA
	Bot *Bot
	Geo *Geo
	ASN *ASN
}

// UA is the parsed User-Agent header.
type UA struct {
	Browser   string `json:"browser,omitempty"`
	Version   string `json:"version,omitempty"`
	OS        string `json:"os,omitempty"`
	OSVersion string `json:"os_version,omitempty"`
	Device    string `json:"device"` // desktop, mobile, tablet, bot or unknown
}

// Bot is the bot verdict: IsBot when any reason holds.
type Bot struct {
	IsBot   bool     `json:"is_bot"`
	Reasons []string `json:"reasons"`
}

// Geo is the client address's location, from GEOIP_DB.
type Geo struct {
	Country string `json:"country,omitempty"` // ISO 3166-1 alpha-2
	Region  string `json:"region,omitempty"`  // ISO 3166-2 subdivision code, without the country
	City    string `json:"city,omitempty"`    // English name
}

// ASN is the client address's network, from GEOIP_ASN_DB.
type ASN struct {
	Number uint32 `json:"number"`
	Org    string `json:"org,omitempty"`
}

// Campaign is what the event's url says of the campaign that brought the
// visitor: the utm_* parameters and the ad click ids. Parameters in
// SANITIZE_PARAMS are removed from the url first, and so never appear here.
type Campaign struct {
	Source  string `json:"utm_source,omitempty"`
	Medium  string `json:"utm_medium,omitempty"`
	Name    string `json:"utm_campaign,omitempty"`
	Term    string `json:"utm_term,omitempty"`
	Content string `json:"utm_content,omitempty"`
	ID      string `json:"utm_id,omitempty"`
	Gclid   string `json:"gclid,omitempty"`
	Gbraid  string `json:"gbraid,omitempty"`
	Wbraid  string `json:"wbraid,omitempty"`
	Fbclid  string `json:"fbclid,omitempty"`
	Msclkid string `json:"msclkid,omitempty"`
}

// MaxCampaignValueLen bounds each campaign value; longer ones are cut.
const MaxCampaignValueLen = 256

// ParseCampaign returns the campaign parameters of rawURL's query, or nil
// when it has none. It reads only the query, and allocates nothing for a
// url without campaign parameters.
func ParseCampaign(rawURL string) *Campaign {
	var c Campaign
	if !parseCampaign(rawURL, &c) {
		return nil
	}
	return &c
}

// parseCampaign fills c from rawURL's query and reports whether it found
// any campaign parameter.
func parseCampaign(rawURL string, c *Campaign) bool {
	rawURL, _, _ = strings.Cut(rawURL, "#") // a "?" in the fragment starts no query
	_, q, ok := strings.Cut(rawURL, "?")
	if !ok {
		return false
	}
	found := false
	var probe Campaign
	for q != "" {
		var part string
		part, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(part, "=")
		if probe.field(k) == nil {
			continue
		}
		v, err := unescape(v)
		if err != nil || v == "" {
			continue
		}
		found = true
		if dst := c.field(k); *dst == "" { // the first of a repeated parameter wins
			*dst = truncateUTF8(validUTF8(v), MaxCampaignValueLen)
		}
	}
	return found
}

// field returns the field of parameter k, or nil when k is none of them.
func (c *Campaign) field(k string) *string {
	switch k {
	case "utm_source":
		return &c.Source
	case "utm_medium":
		return &c.Medium
	case "utm_campaign":
		return &c.Name
	case "utm_term":
		return &c.Term
	case "utm_content":
		return &c.Content
	case "utm_id":
		return &c.ID
	case "gclid":
		return &c.Gclid
	case "gbraid":
		return &c.Gbraid
	case "wbraid":
		return &c.Wbraid
	case "fbclid":
		return &c.Fbclid
	case "msclkid":
		return &c.Msclkid
	}
	return nil
}

// appendEnrichment appends the event's enrichment members.
func (e *Event) appendEnrichment(b []byte) []byte {
	if u := e.UA; u != nil {
		b = append(b, `,"ua":{"device":`...)
		b = appendString(b, u.Device)
		b = appendField(b, `,"browser":`, u.Browser)
		b = appendField(b, `,"version":`, u.Version)
		b = appendField(b, `,"os":`, u.OS)
		b = appendField(b, `,"os_version":`, u.OSVersion)
		b = append(b, '}')
	}
	if bt := e.Bot; bt != nil {
		b = append(b, `,"bot":{"is_bot":`...)
		b = strconv.AppendBool(b, bt.IsBot)
		b = append(b, `,"reasons":[`...)
		for i, r := range bt.Reasons {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, r)
		}
		b = append(b, "]}"...)
	}
	if g := e.Geo; g != nil {
		b = append(b, `,"geo":{`...)
		n := len(b)
		b = appendField(b, `,"country":`, g.Country)
		b = appendField(b, `,"region":`, g.Region)
		b = appendField(b, `,"city":`, g.City)
		b = closeObject(b, n)
	}
	if a := e.ASN; a != nil {
		b = append(b, `,"asn":{"number":`...)
		b = strconv.AppendUint(b, uint64(a.Number), 10)
		b = appendField(b, `,"org":`, a.Org)
		b = append(b, '}')
	}
	return b
}

// AppendJSON appends the campaign as a JSON object.
func (c *Campaign) AppendJSON(b []byte) []byte {
	b = append(b, '{')
	n := len(b)
	for _, f := range [...]struct{ k, v string }{
		{`,"utm_source":`, c.Source}, {`,"utm_medium":`, c.Medium}, {`,"utm_campaign":`, c.Name},
		{`,"utm_term":`, c.Term}, {`,"utm_content":`, c.Content}, {`,"utm_id":`, c.ID},
		{`,"gclid":`, c.Gclid}, {`,"gbraid":`, c.Gbraid}, {`,"wbraid":`, c.Wbraid},
		{`,"fbclid":`, c.Fbclid}, {`,"msclkid":`, c.Msclkid},
	} {
		b = appendField(b, f.k, f.v)
	}
	return closeObject(b, n)
}

// closeObject ends an object opened just before n, whose members were
// each appended with a leading comma: the first comma goes.
func closeObject(b []byte, n int) []byte {
	if len(b) > n {
		b = append(b[:n], b[n+1:]...)
	}
	return append(b, '}')
}

// enrichmentSize estimates the length of the enrichment members, so that
// Seal's first buffer holds them without growing.
func (e *Event) enrichmentSize() int {
	n := 0
	if u := e.UA; u != nil {
		n += 80 + len(u.Browser) + len(u.Version) + len(u.OS) + len(u.OSVersion)
	}
	if b := e.Bot; b != nil {
		n += 40 + 20*len(b.Reasons)
	}
	if g := e.Geo; g != nil {
		n += 48 + len(g.Country) + len(g.Region) + len(g.City)
	}
	if a := e.ASN; a != nil {
		n += 40 + len(a.Org)
	}
	return n
}
