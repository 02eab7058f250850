// Package docs holds no code: its test checks that every in-page and
// relative link of the Markdown documentation resolves.
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// markdownFiles are the documents checked: README.md, METRICS.md and
// everything under docs/.
func markdownFiles(t *testing.T) []string {
	t.Helper()
	files := []string{"../README.md", "../METRICS.md"}
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".md") {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

var (
	fence      = regexp.MustCompile("^\\s*(```|~~~)")
	codeSpan   = regexp.MustCompile("`[^`]*`")
	inlineLink = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	refLink    = regexp.MustCompile(`^\s*\[[^\]]+\]:\s*(\S+)`)
	heading    = regexp.MustCompile(`^(#{1,6})\s+(.*?)\s*#*\s*$`)
)

// prose returns the lines of a Markdown document outside fenced code
// blocks, with their numbers.
func prose(text string) (lines []string, numbers []int) {
	in := false
	for i, line := range strings.Split(text, "\n") {
		if fence.MatchString(line) {
			in = !in
			continue
		}
		if !in {
			lines = append(lines, line)
			numbers = append(numbers, i+1)
		}
	}
	return lines, numbers
}

// slug is GitHub's anchor for a heading: lower case, punctuation dropped
// (but - and _), spaces turned into hyphens.
func slug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// anchors returns the anchors of a Markdown document's headings, with
// GitHub's -1, -2 suffixes for repeated ones.
func anchors(text string) map[string]bool {
	lines, _ := prose(text)
	seen := map[string]int{}
	out := map[string]bool{}
	for _, line := range lines {
		m := heading.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		s := slug(m[2])
		if n := seen[s]; n > 0 {
			out[s+"-"+strconv.Itoa(n)] = true
		} else {
			out[s] = true
		}
		seen[s]++
	}
	return out
}

// links returns the link targets of a Markdown document, outside code.
func links(text string) (targets []string, numbers []int) {
	lines, nums := prose(text)
	for i, line := range lines {
		line = codeSpan.ReplaceAllString(line, "")
		for _, m := range inlineLink.FindAllStringSubmatch(line, -1) {
			targets, numbers = append(targets, m[1]), append(numbers, nums[i])
		}
		if m := refLink.FindStringSubmatch(line); m != nil {
			targets, numbers = append(targets, m[1]), append(numbers, nums[i])
		}
	}
	return targets, numbers
}

// checkLink reports what is wrong with one link of file, or "".
func checkLink(file, target string) string {
	if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
		return "" // external: not checked (no network in the tests)
	}
	path, anchor, _ := strings.Cut(target, "#")
	dest := file
	if path != "" {
		dest = filepath.Join(filepath.Dir(file), path)
		if _, err := os.Stat(dest); err != nil {
			return "no such file or directory: " + dest
		}
	}
	if anchor == "" {
		return ""
	}
	if !strings.HasSuffix(dest, ".md") {
		return "an anchor into a file that is not Markdown"
	}
	b, err := os.ReadFile(dest)
	if err != nil {
		return err.Error()
	}
	if !anchors(string(b))[anchor] {
		return "no heading makes the anchor #" + anchor + " in " + dest
	}
	return ""
}

func TestLinksResolve(t *testing.T) {
	n := 0
	for _, f := range markdownFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		targets, lines := links(string(b))
		for i, target := range targets {
			n++
			if problem := checkLink(f, target); problem != "" {
				t.Errorf("%s:%d: link %q: %s", f, lines[i], target, problem)
			}
		}
	}
	if n < 20 {
		t.Errorf("only %d links found; is the link pattern broken?", n)
	}
}

// TestRunbookURLsResolve checks that every alert's runbook_url points at a
// section of docs/runbook.md.
func TestRunbookURLsResolve(t *testing.T) {
	b, err := os.ReadFile("../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	rb, err := os.ReadFile("runbook.md")
	if err != nil {
		t.Fatal(err)
	}
	have := anchors(string(rb))
	alerts := regexp.MustCompile(`(?m)^\s*- alert: (\S+)`).FindAllStringSubmatch(string(b), -1)
	urls := regexp.MustCompile(`(?m)^\s*runbook_url: "?https://github\.com/gotrack/gotrack/blob/main/docs/runbook\.md#([^"\s]+)"?`).FindAllStringSubmatch(string(b), -1)
	if len(alerts) == 0 || len(urls) != len(alerts) {
		t.Fatalf("%d alerts, %d runbook_url annotations into docs/runbook.md; want one each", len(alerts), len(urls))
	}
	for i, a := range alerts {
		if want := strings.ToLower(a[1]); urls[i][1] != want {
			t.Errorf("alert %s links to #%s, want #%s", a[1], urls[i][1], want)
		}
		if !have[urls[i][1]] {
			t.Errorf("alert %s: docs/runbook.md has no section #%s", a[1], urls[i][1])
		}
	}
	// Each section says what the alert means, how to confirm it, what to do.
	sections := strings.Split(string(rb), "\n## ")[1:]
	if len(sections) != len(alerts) {
		t.Errorf("docs/runbook.md has %d sections for %d alerts", len(sections), len(alerts))
	}
	for _, sec := range sections {
		title, _, _ := strings.Cut(sec, "\n")
		for _, part := range []string{"**Meaning.**", "**Confirm.**", "**Act.**"} {
			if !strings.Contains(sec, part) {
				t.Errorf("runbook section %s lacks %s", title, part)
			}
		}
	}
}

func TestSlug(t *testing.T) {
	for h, want := range map[string]string{
		"`GET|HEAD /px.gif`: the tracking pixel":              "gethead-pxgif-the-tracking-pixel",
		"Kafka client (with `KAFKA_CLIENT_METRICS=true`)":     "kafka-client-with-kafka_client_metricstrue",
		"Dead letters and `gotrack replay`":                   "dead-letters-and-gotrack-replay",
		"`gotrack replay`, pushed to a Pushgateway under job": "gotrack-replay-pushed-to-a-pushgateway-under-job",
	} {
		if got := slug(h); got != want {
			t.Errorf("slug(%q) = %q, want %q", h, got, want)
		}
	}
}
