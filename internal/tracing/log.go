package tracing

import (
	"context"
	"log/slog"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
)

// LogSDK sends the OpenTelemetry SDK's own reports (a failed export, a
// collector that cannot be reached, an OTEL_* variable it could not read)
// to log, an export failure as a warning, rather than as plain text lines
// on the process's stderr, which would break LOG_FORMAT=json. The SDK
// keeps its handler in process-wide state: the last call wins.
func LogSDK(log *slog.Logger) {
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("tracing: opentelemetry sdk error", "err", err)
	}))
	otel.SetLogger(logr.FromSlogHandler(log.Handler()))
}

// Exemplar returns the exemplar labels of an observation made under ctx:
// trace_id when its span is sampled (an unsampled trace cannot be looked
// up), else nil.
func Exemplar(ctx context.Context) prometheus.Labels {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsSampled() {
		return nil
	}
	return prometheus.Labels{"trace_id": sc.TraceID().String()}
}

// LogHandler wraps h so that a record logged with a context holding a
// valid span context (sampled or not) carries trace_id and span_id.
func LogHandler(h slog.Handler) slog.Handler { return logHandler{h} }

type logHandler struct{ slog.Handler }

func (h logHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return logHandler{h.Handler.WithAttrs(as)}
}

func (h logHandler) WithGroup(name string) slog.Handler {
	return logHandler{h.Handler.WithGroup(name)}
}
