package auth

import "log/slog"

// Secret is a password, token or credential secret. It never prints: the
// fmt verbs and slog show REDACTED, so a Secret in a log line or an error
// cannot leak. Use string(s) only where the value goes on the wire.
type Secret string

// String implements fmt.Stringer.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "REDACTED"
}

// GoString implements fmt.GoStringer (%#v).
func (s Secret) GoString() string { return `auth.Secret("` + s.String() + `")` }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON implements json.Marshaler: a Secret inside a struct logged
// by slog's JSON handler (--log-format json) or encoded to JSON shows
// REDACTED too.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + s.String() + `"`), nil }

// MarshalText implements encoding.TextMarshaler, for the other encoders.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
