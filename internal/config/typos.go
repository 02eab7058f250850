package config

import (
	"slices"
	"strings"
)

// foreign are variables that share a first word with GoTrack's settings
// but belong to other software often found next to it, so they are never
// taken for typos: the official postgres image's, Kafka's start scripts',
// CGI's, and GoTrack's own test suite's.
var foreign = []string{
	"PG_MAJOR", "PG_VERSION", "PG_SHA256", "PG_TEST_DSN", "PG_TEST_PGDATA", "PG_TEST_PGCTL", "PG_TEST_RUNAS", "PG_TEST_DURABLE",
	"KAFKA_HOME", "KAFKA_VERSION", "KAFKA_OPTS", "KAFKA_HEAP_OPTS", "KAFKA_JVM_PERFORMANCE_OPTS", "KAFKA_JMX_OPTS",
	"KAFKA_LOG4J_OPTS", "KAFKA_GC_LOG_OPTS", "KAFKA_DEBUG", "KAFKA_CLUSTER_ID",
	"SERVER_NAME", "SERVER_PORT", "SERVER_SOFTWARE", "SERVER_PROTOCOL", "SERVER_ADMIN", "SERVER_SIGNATURE",
}

// foreignPrefixes are whole families of such variables: the Bitnami Kafka
// image's KAFKA_CFG_*, Confluent's image's KAFKA_ADVERTISED_*, and so on.
var foreignPrefixes = []string{"KAFKA_CFG_", "KAFKA_CONTROLLER_", "KAFKA_ADVERTISED_", "KAFKA_LISTENER", "KAFKA_INTER_BROKER_"}

// Typos returns a warning for each variable of environ ("NAME=value", as
// os.Environ gives) that looks like a GoTrack setting but is not one, such
// as SPOOL_DIRR, naming the closest setting. A variable looks like one when
// its first word, up to the first underscore and in any case, is the first
// word of a setting (SPOOL_, PG_, KAFKA_, METRICS_, LOG_ and so on; the list
// follows the settings) and it is not one of the foreign variables above.
func Typos(environ []string) []string {
	var names []string
	prefixes := map[string]bool{}
	for _, s := range settings(&Config{}) {
		names = append(names, s.name)
		if first, _, ok := strings.Cut(s.name, "_"); ok {
			prefixes[first+"_"] = true
		}
	}
	var warnings []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		upper := strings.ToUpper(name) // spool_dir is a typo of SPOOL_DIR too
		first, _, ok := strings.Cut(upper, "_")
		if !ok || !prefixes[first+"_"] || slices.Contains(names, name) || slices.Contains(foreign, upper) ||
			slices.ContainsFunc(foreignPrefixes, func(p string) bool { return strings.HasPrefix(upper, p) }) {
			continue
		}
		warnings = append(warnings, name+" is not a GoTrack setting and is ignored; did you mean "+closest(upper, names)+"?")
	}
	slices.Sort(warnings)
	return warnings
}

// closest returns the name with the smallest edit distance to s.
func closest(s string, names []string) string {
	best, bestD := "", -1
	for _, n := range names {
		if d := distance(s, n); bestD < 0 || d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// distance is the Levenshtein distance between a and b, in bytes (setting
// names are ASCII).
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
