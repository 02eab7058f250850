package event

import (
	"net/url"
	"strings"
	"testing"
)

// TestFromQueryScrubsEncodedSecretKeys: a pixel's page URL and referrer,
// sent as the url and ref parameters, lose the values of secret query keys
// however the key is spelt: %-escaped (once in the URL, so twice in the
// pixel's query), '+', mixed case, the Kelvin sign that lower-cases to
// "k", a key repeated, in the query or the fragment. It guards SanitizeURL's
// skipping of keys by their first byte (mayName) end to end.
func TestFromQueryScrubsEncodedSecretKeys(t *testing.T) {
	n := mustNormalizer(t, Policy{IPMode: IPTruncate, SanitizeParams: append([]string{"key"}, DefaultSanitizeParams...)})
	const secret = "S3CR3T"
	for _, page := range []string{
		"https://a.example/p?token=" + secret,
		"https://a.example/p?TOKEN=" + secret,
		"https://a.example/p?ToKeN=" + secret,
		"https://a.example/p?%74oken=" + secret,
		"https://a.example/p?%54OKEN=" + secret,
		"https://a.example/p?t%6Fken=" + secret,
		"https://a.example/p?x=1&token=a&token=" + secret,
		"https://a.example/p?token=a&x=1&Token=" + secret,
		"https://a.example/p?\u212Aey=" + secret,
		"https://a.example/p?%E2%84%AAey=" + secret,
		"https://a.example/p?Key=" + secret,
		"https://a.example/p?%41PI_KEY=" + secret,
		"https://a.example/p?Email=" + secret + "&utm_source=x",
		"https://a.example/p?a=1&&Session=" + secret,
		"https://a.example/p#access_token=" + secret + "&state=x",
		"https://a.example/p?ok=1#%49D_TOKEN=" + secret,
	} {
		for _, param := range []string{"url", "ref"} {
			q := "e=pageview&" + param + "=" + url.QueryEscape(page)
			e, err := n.FromQuery(q, Meta{Now: now, IP: "203.0.113.0", UserAgent: "UA/1", SourceID: "anonymous"})
			if err != nil {
				t.Errorf("%s=%s: %v", param, page, err)
				continue
			}
			if js := string(e.JSON()); strings.Contains(js, secret) {
				t.Errorf("%s=%s: the secret is stored: %s", param, page, js)
			}
		}
	}
}
