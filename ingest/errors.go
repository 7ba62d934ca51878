package ingest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"unicode/utf8"
)

// apiError is a refusal answered to the caller: the HTTP status, the field
// at fault (a dotted JSON path such as "request.hwid", a header name, or
// "body"; empty when no field is at fault) and a message.
type apiError struct {
	Code  int
	Field string
	Msg   string
	// RetryAfter, when positive, is sent as the Retry-After header (seconds).
	RetryAfter int
}

// Error is the status_message: "<field>: <message>".
func (e *apiError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

// badField is a 400 naming field.
func badField(field, format string, args ...any) *apiError {
	return &apiError{Code: http.StatusBadRequest, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// jsonError explains a decoding error of encoding/json, naming the field
// the decoder reports (its dotted path from the body's root).
func jsonError(err error) *apiError {
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
	)
	switch {
	case errors.Is(err, io.EOF):
		return badField("body", "is empty, want a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badField("body", "malformed JSON: unexpected end of input")
	case errors.As(err, &syn):
		return badField("body", "malformed JSON at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return badField("body", "must be a JSON object, got %s", typ.Value)
		}
		return badField(typ.Field, "must be %s, got %s", jsonTypeName(typ.Type), typ.Value)
	}
	return badField("body", "malformed JSON: %v", err)
}

// jsonTypeName names a Go type the way a JSON user thinks of it.
func jsonTypeName(t reflect.Type) string {
	if t == nil {
		return "a different type"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "a list"
	}
	return "a different type"
}

// quote quotes an outside value for a message, cut to a readable length.
func quote(s string) string {
	const limit = 64
	if len(s) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	return strconv.Quote(s)
}
