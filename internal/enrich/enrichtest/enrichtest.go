// Package enrichtest builds small MaxMind databases for tests, with
// MaxMind's mmdbwriter, since no real database can be shipped or fetched.
package enrichtest

import (
	"cmp"
	"maps"
	"net"
	"os"
	"slices"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// WriteDB writes, atomically (by rename), an mmdb file of dbType (such as
// GeoLite2-City or GeoLite2-ASN) holding the records of nets, by CIDR; a
// network inside another one overrides it there.
// Reserved networks (loopback, documentation) are allowed.
func WriteDB(t testing.TB, path, dbType string, nets map[string]mmdbtype.Map) {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: dbType, RecordSize: 24, IncludeReservedNetworks: true})
	if err != nil {
		t.Fatal(err)
	}
	// Broader networks first: inserting a network replaces whatever it
	// covers, so a /32 inside a /24 must come after it.
	cidrs := slices.Collect(maps.Keys(nets))
	slices.SortFunc(cidrs, func(a, b string) int {
		return cmp.Or(cmp.Compare(prefixLen(t, a), prefixLen(t, b)), cmp.Compare(a, b))
	})
	for _, cidr := range cidrs {
		_, n, _ := net.ParseCIDR(cidr)
		if err := tree.Insert(n, nets[cidr]); err != nil {
			t.Fatal(err)
		}
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func prefixLen(t testing.TB, cidr string) int {
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		t.Fatal(err)
	}
	ones, _ := n.Mask.Size()
	return ones
}

// City is a City database record.
func City(country, region, city string) mmdbtype.Map {
	m := mmdbtype.Map{
		"country": mmdbtype.Map{"iso_code": mmdbtype.String(country)},
		"city":    mmdbtype.Map{"names": mmdbtype.Map{"en": mmdbtype.String(city), "de": mmdbtype.String(city + "-de")}},
	}
	if region != "" {
		m["subdivisions"] = mmdbtype.Slice{mmdbtype.Map{"iso_code": mmdbtype.String(region)}}
	}
	return m
}

// ASN is an ASN database record.
func ASN(number uint32, org string) mmdbtype.Map {
	return mmdbtype.Map{"autonomous_system_number": mmdbtype.Uint32(number), "autonomous_system_organization": mmdbtype.String(org)}
}
