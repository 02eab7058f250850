package deploy

import (
	"os"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestCollectorConfig decodes deploy/otel/collector.yaml and checks that
// every component its traces and metrics pipelines name is defined, that it receives
// OTLP over HTTP on 4318 (where GoTrack sends) and limits memory first. No
// Collector binary is available here, so this is all that is checked.
func TestCollectorConfig(t *testing.T) {
	b, err := os.ReadFile("otel/collector.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Receivers  map[string]any `json:"receivers"`
		Processors map[string]any `json:"processors"`
		Exporters  map[string]any `json:"exporters"`
		Service    struct {
			Pipelines map[string]struct {
				Receivers, Processors, Exporters []string
			} `json:"pipelines"`
		} `json:"service"`
	}
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		t.Fatal(err)
	}
	// A metrics pipeline too: gotrack replay posts its job metrics to
	// /v1/metrics of the same endpoint, which a Collector with a traces
	// pipeline only would not take, failing the run.
	for _, signal := range []string{"traces", "metrics"} {
		p, ok := c.Service.Pipelines[signal]
		if !ok {
			t.Errorf("no %s pipeline", signal)
			continue
		}
		for kind, names := range map[string][]string{"receiver": p.Receivers, "processor": p.Processors, "exporter": p.Exporters} {
			defined := map[string]map[string]any{"receiver": c.Receivers, "processor": c.Processors, "exporter": c.Exporters}[kind]
			if len(names) == 0 {
				t.Errorf("%s pipeline has no %s", signal, kind)
			}
			for _, n := range names {
				if _, ok := defined[n]; !ok {
					t.Errorf("%s pipeline names %s %q, which is not defined", signal, kind, n)
				}
			}
		}
		if len(p.Processors) == 0 || p.Processors[0] != "memory_limiter" {
			t.Errorf("%s processors %v: memory_limiter must come first", signal, p.Processors)
		}
		if len(p.Receivers) != 1 || p.Receivers[0] != "otlp" {
			t.Errorf("%s receivers %v, want otlp", signal, p.Receivers)
		}
	}
	otlp, _ := c.Receivers["otlp"].(map[string]any)
	protocols, _ := otlp["protocols"].(map[string]any)
	http, _ := protocols["http"].(map[string]any)
	if http["endpoint"] != "0.0.0.0:4318" {
		t.Errorf("otlp http receiver endpoint %v, want 0.0.0.0:4318", http["endpoint"])
	}
}
