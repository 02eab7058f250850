package event

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

func TestParseCampaign(t *testing.T) {
	for url, want := range map[string]*Campaign{
		"https://a.example/":   nil,
		"https://a.example/?q": nil,
		"https://a.example/?utm_source=news&utm_medium=email&utm_campaign=spring+sale&utm_term=shoes&utm_content=a%26b&utm_id=42": {
			Source: "news", Medium: "email", Name: "spring sale", Term: "shoes", Content: "a&b", ID: "42"},
		"https://a.example/p?gclid=G1&gbraid=GB&wbraid=WB&fbclid=F1&msclkid=M1&x=1#utm_source=frag": {
			Gclid: "G1", Gbraid: "GB", Wbraid: "WB", Fbclid: "F1", Msclkid: "M1"},
		"https://a.example/?utm_source=first&utm_source=second&utm_medium=": {Source: "first"},
		"https://a.example/?utm_source=%zz":                                 nil,
		"https://a.example/#/landing?utm_source=frag":                       nil, // a "?" in the fragment starts no query
		"https://a.example/?gclid=G1#/x?utm_source=frag":                    {Gclid: "G1"},
	} {
		if got := ParseCampaign(url); !reflect.DeepEqual(got, want) {
			t.Errorf("ParseCampaign(%s) = %+v, want %+v", url, got, want)
		}
	}
	long := ParseCampaign("https://a.example/?utm_term=" + string(make([]byte, 0)) + repeat("é", 200))
	if long == nil || len(long.Term) > MaxCampaignValueLen {
		t.Errorf("a long value is not cut: %d bytes", len(long.Term))
	}
}

func repeat(s string, n int) string {
	b := make([]byte, 0, len(s)*n)
	for range n {
		b = append(b, s...)
	}
	return string(b)
}

// TestEnrichmentJSON checks that the hand-written encoding of the
// enrichment is valid JSON that decodes back to the same values.
func TestEnrichmentJSON(t *testing.T) {
	e := &Event{EventID: "0190b2a4-0000-7000-8000-000000000000", ReceivedAt: time.Unix(1, 0), Type: "x", Source: SourcePixel, SourceID: "shop",
		UA:       &UA{Browser: "Chrome", Version: "131.0", OS: "Windows", OSVersion: "10.0", Device: "desktop"},
		Bot:      &Bot{IsBot: true, Reasons: []string{"crawler", "datacenter"}},
		Geo:      &Geo{Country: "DE", City: "Berlin \"Mitte\""},
		ASN:      &ASN{Number: 4294967295, Org: "AS"},
		Campaign: (&Campaign{Source: "news", Msclkid: "m"}).AppendJSON(nil),
	}
	var c Campaign
	if err := json.Unmarshal(e.Campaign, &c); err != nil || c != (Campaign{Source: "news", Msclkid: "m"}) {
		t.Errorf("campaign %s decodes to %+v, %v", e.Campaign, c, err)
	}
	for _, ev := range []*Event{e, {EventID: e.EventID, ReceivedAt: e.ReceivedAt, Type: "x", Source: SourcePixel, Bot: &Bot{Reasons: []string{}}, Geo: &Geo{}}} {
		b := ev.AppendJSON(nil)
		if !json.Valid(b) {
			t.Fatalf("invalid JSON: %s", b)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, pair := range [][2]any{{got.UA, ev.UA}, {got.Bot, ev.Bot}, {got.Geo, ev.Geo}, {got.ASN, ev.ASN}} {
			if !reflect.DeepEqual(pair[0], pair[1]) {
				t.Errorf("decoded %+v, want %+v, from %s", pair[0], pair[1], b)
			}
		}
	}
}
