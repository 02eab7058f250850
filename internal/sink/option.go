package sink

import (
	"errors"
	"regexp"
)

// An OptionError is one problem a sink's Options.Validate found. Its Text
// names the options involved in braces, {Topic} say, so that a caller who
// filled them from elsewhere (internal/config, from environment variables)
// can show its own names for them with Render. The rule stays written once,
// in the sink; only the names change.
type OptionError struct {
	Sink string // the sink's package name, prefixed to Error
	Text string // what is wrong and what is allowed, naming options as {Field}
}

var field = regexp.MustCompile(`\{([A-Za-z0-9]+)\}`)

// Render returns Text with each {Field} replaced by name(Field).
func (e *OptionError) Render(name func(field string) string) string {
	return field.ReplaceAllStringFunc(e.Text, func(m string) string { return name(m[1 : len(m)-1]) })
}

func (e *OptionError) Error() string {
	return e.Sink + ": " + e.Render(func(f string) string { return f })
}

// OptionErrors collects the problems of one Validate call.
type OptionErrors struct {
	sink string
	errs []error
}

// NewOptionErrors starts a collection for the named sink.
func NewOptionErrors(sink string) *OptionErrors { return &OptionErrors{sink: sink} }

// Add records a problem; text names options as {Field}.
func (o *OptionErrors) Add(text string) {
	o.errs = append(o.errs, &OptionError{Sink: o.sink, Text: text})
}

// Join records err as it is: an *OptionError a helper made, say.
func (o *OptionErrors) Join(err error) {
	if err != nil {
		o.errs = append(o.errs, err)
	}
}

// Err returns every problem joined (errors.Join), or nil when there is none.
func (o *OptionErrors) Err() error { return errors.Join(o.errs...) }
