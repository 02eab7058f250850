package tracing

import (
	"context"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// MetricsURL is the URL job metrics are posted to:
// OTEL_EXPORTER_OTLP_METRICS_ENDPOINT as it is, or
// OTEL_EXPORTER_OTLP_ENDPOINT with /v1/metrics; "" when neither is set.
func (o Options) MetricsURL() string {
	if o.MetricsEndpoint != "" {
		return o.MetricsEndpoint
	}
	if o.Endpoint != "" {
		return strings.TrimSuffix(o.Endpoint, "/") + "/v1/metrics"
	}
	return ""
}

// MetricsEnabled reports whether a batch job exports its metrics over OTLP.
func (o Options) MetricsEnabled() bool { return !o.Disabled && o.MetricsURL() != "" }

// Gauge is one value a batch job reports at its end.
type Gauge struct {
	Name, Help, Unit string
	Value            float64
	Attrs            []attribute.KeyValue
}

// PushJobMetrics exports a batch job's gauges once over OTLP/HTTP, the
// push alternative to the Pushgateway, and waits for the export, bounded by
// ctx.
func PushJobMetrics(ctx context.Context, o Options, version string, gauges []Gauge) error {
	// Every option is set, so that the exporter follows only the variables
	// GoTrack lists, not others it would read from the environment itself.
	tc, err := tlsConfig(o, o.MetricsURL())
	if err != nil {
		return err
	}
	eopts := []otlpmetrichttp.Option{otlpmetrichttp.WithEndpointURL(o.MetricsURL()), otlpmetrichttp.WithHeaders(o.Headers),
		otlpmetrichttp.WithTLSClientConfig(tc), otlpmetrichttp.WithCompression(otlpmetrichttp.NoCompression),
		otlpmetrichttp.WithTimeout(ExportRequestTimeout)}
	exp, err := otlpmetrichttp.New(ctx, eopts...)
	if err != nil {
		return fmt.Errorf("otlp metrics: %w", err)
	}
	attrs := o.resourceAttrs(version)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader),
		sdkmetric.WithResource(resource.NewWithAttributes(semconv.SchemaURL, attrs...)))
	meter := mp.Meter(Scope)
	for _, g := range gauges {
		inst, err := meter.Float64Gauge(g.Name, metric.WithDescription(g.Help), metric.WithUnit(g.Unit))
		if err != nil {
			return fmt.Errorf("otlp metrics: %w", err)
		}
		inst.Record(ctx, g.Value, metric.WithAttributes(g.Attrs...))
	}
	rm := new(metricdata.ResourceMetrics)
	if err := reader.Collect(ctx, rm); err != nil {
		return fmt.Errorf("otlp metrics: %w", err)
	}
	if err := exp.Export(ctx, rm); err != nil {
		return fmt.Errorf("otlp metrics: export to %s: %w", o.MetricsURL(), err)
	}
	return exp.Shutdown(ctx)
}
