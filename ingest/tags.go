package ingest

import (
	"encoding/json"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/schemas"
)

// Pushwoosh tags are typed: integer, string, list, date, boolean, decimal,
// version (https://docs.pushwoosh.com/developer/api-reference/tags-api/).
// Pushwoosh types a tag by its definition in the control panel; Herald has
// no tag registry yet, so a call may declare types in request.tag_types
// ({"Last Order":"date","App Version":"version"}) and the rest are inferred
// from the JSON value:
//
//	JSON integer                     integer
//	other JSON number                decimal
//	true / false                     boolean
//	list                             list (of strings)
//	"YYYY-MM-DD HH:mm" (exactly)     date
//	other string                     string
//
// Dates travel as RFC 3339 UTC strings ("2026-11-24T10:30:00Z"); a declared
// date also takes RFC 3339 and unix seconds. Versions are 1 to 4 dot-
// separated numbers. A value that does not fit its declared type is a 400
// naming request.tags.<name>.
//
// Operations, as Pushwoosh's tag objects: {"operation":"increment","value":5}
// adds to an integer or decimal tag; {"operation":"append","value":["a"]}
// and {"operation":"remove","value":["a"]} add list items the tag does not
// hold yet or take them out ("op" is taken for "operation", a single string
// for a one-item list). Null removes a tag.

// versionRe is a tag version: 1.2.3, at most four parts of at most 9 digits.
var versionRe = regexp.MustCompile(`^[0-9]{1,9}(\.[0-9]{1,9}){0,3}$`)

// pwDateLayout is Pushwoosh's date tag format, UTC.
const pwDateLayout = "2006-01-02 15:04"

var tagTypeNames = map[string]bool{
	schemas.TagInteger: true, schemas.TagString: true, schemas.TagList: true, schemas.TagDate: true,
	schemas.TagBoolean: true, schemas.TagDecimal: true, schemas.TagVersion: true,
}

// taggedValues are the decoded tags of a call.
type taggedValues struct {
	tags  map[string]any
	types map[string]string
	ops   map[string]string
}

// decodeTags decodes request.tags with the declared request.tag_types.
func decodeTags(field string, raw, rawTypes json.RawMessage) (taggedValues, *apiError) {
	var out taggedValues
	declared, aerr := decodeTagTypes(rawTypes)
	if aerr != nil {
		return out, aerr
	}
	obj, names, aerr := decodeNamed(field, raw, tagRules)
	if aerr != nil || len(obj) == 0 {
		if aerr == nil && len(declared) > 0 {
			aerr = badField("request.tag_types", "declares types but request.tags is empty")
		}
		return out, aerr
	}
	for name := range declared {
		if _, ok := obj[name]; !ok {
			return out, badField("request.tag_types."+name, "declares a tag that request.tags does not set")
		}
	}
	out.tags = make(map[string]any, len(obj))
	out.types = make(map[string]string, len(obj))
	for _, name := range names {
		f := field + "." + name
		v, typ, op, aerr := tagValue(f, obj[name], declared[name])
		if aerr != nil {
			return taggedValues{}, aerr
		}
		out.tags[name] = v
		if v != nil {
			out.types[name] = typ
		}
		if op != "" {
			if out.ops == nil {
				out.ops = make(map[string]string)
			}
			out.ops[name] = op
		}
	}
	if len(out.types) == 0 {
		out.types = nil
	}
	return out, nil
}

// decodeTagTypes reads request.tag_types: tag name to type name.
func decodeTagTypes(raw json.RawMessage) (map[string]string, *apiError) {
	const tf = "request.tag_types"
	if isNull(raw) {
		return nil, nil
	}
	var m map[string]string
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, badField(tf, "must be an object of tag names to types (integer, string, list, date, boolean, decimal, version)")
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if !tagTypeNames[m[k]] {
			return nil, badField(tf+"."+k, "%s is not a tag type: want integer, string, list, date, boolean, decimal or version", quote(m[k]))
		}
	}
	return m, nil
}

// tagValue checks one tag value against its declared type (or infers the
// type) and returns the value to store, its type and its operation.
func tagValue(field string, v any, declared string) (any, string, string, *apiError) {
	if obj, ok := v.(map[string]any); ok {
		return tagOperation(field, obj, declared)
	}
	if v == nil {
		return nil, "", "", nil
	}
	if aerr := checkValue(field, v, tagRules); aerr != nil {
		return nil, "", "", aerr
	}
	typ := declared
	if typ == "" {
		typ = inferTagType(v)
	}
	out, aerr := convertTag(field, v, typ)
	return out, typ, "", aerr
}

// inferTagType types an undeclared value, see the package comment.
func inferTagType(v any) string {
	switch x := v.(type) {
	case bool:
		return schemas.TagBoolean
	case json.Number:
		if isInteger(x) {
			return schemas.TagInteger
		}
		return schemas.TagDecimal
	case []any:
		return schemas.TagList
	case string:
		if _, err := time.Parse(pwDateLayout, x); err == nil && len(x) == len(pwDateLayout) {
			return schemas.TagDate
		}
	}
	return schemas.TagString
}

// isInteger reports whether n is written as an integer that fits int64.
func isInteger(n json.Number) bool {
	_, err := strconv.ParseInt(string(n), 10, 64)
	return err == nil
}

// convertTag checks v against typ and normalises it.
func convertTag(field string, v any, typ string) (any, *apiError) {
	mismatch := func(want string) (any, *apiError) {
		return nil, badField(field, "is a %s tag: want %s", typ, want)
	}
	switch typ {
	case schemas.TagInteger:
		if n, ok := v.(json.Number); ok && isInteger(n) {
			return n, nil
		}
		return mismatch("an integer")
	case schemas.TagDecimal:
		if n, ok := v.(json.Number); ok {
			return n, nil
		}
		if s, ok := v.(string); ok { // decimals are often sent as strings to keep precision
			if _, err := strconv.ParseFloat(s, 64); err == nil && checkNumber(field, json.Number(s)) == nil {
				return json.Number(s), nil
			}
		}
		return mismatch("a number")
	case schemas.TagBoolean:
		if b, ok := v.(bool); ok {
			return b, nil
		}
		return mismatch("true or false")
	case schemas.TagString:
		switch x := v.(type) {
		case string:
			return x, nil
		case json.Number:
			return string(x), nil
		}
		return mismatch("a string")
	case schemas.TagList:
		switch x := v.(type) {
		case []any:
			return x, nil
		case string:
			return []any{x}, nil
		}
		return mismatch("a list of strings")
	case schemas.TagVersion:
		if s, ok := v.(string); ok && versionRe.MatchString(s) {
			return s, nil
		}
		return mismatch(`a version of 1 to 4 numbers, e.g. "2.10.1"`)
	case schemas.TagDate:
		t, ok := parseTagDate(v)
		if !ok {
			return mismatch(`a date "YYYY-MM-DD HH:mm" (UTC), RFC 3339, or unix seconds`)
		}
		return t.Format(time.RFC3339), nil
	}
	return mismatch("a known type")
}

// parseTagDate takes "YYYY-MM-DD HH:mm" (UTC), "YYYY-MM-DD", RFC 3339, or
// unix seconds, between 1900 and 2200.
func parseTagDate(v any) (time.Time, bool) {
	var t time.Time
	switch x := v.(type) {
	case string:
		var err error
		for _, layout := range []string{pwDateLayout, time.DateOnly, time.RFC3339Nano} {
			if t, err = time.Parse(layout, x); err == nil {
				break
			}
		}
		if err != nil {
			return time.Time{}, false
		}
	case json.Number:
		sec, err := x.Int64()
		if err != nil {
			return time.Time{}, false
		}
		t = time.Unix(sec, 0)
	default:
		return time.Time{}, false
	}
	if t.Year() < 1900 || t.Year() > 2200 {
		return time.Time{}, false
	}
	return t.UTC().Truncate(time.Second), true
}

// tagOperation is a tag object: {"operation":..., "value":...}.
func tagOperation(field string, obj map[string]any, declared string) (any, string, string, *apiError) {
	_, hasOp := obj["operation"]
	_, hasOp2 := obj["op"]
	value, hasValue := obj["value"]
	if !hasOp && !hasOp2 && !hasValue {
		return nil, "", "", badField(field, `nested objects are not allowed: a tag value is a string, number, boolean, list of strings, null, or an operation {"operation":"increment|append|remove","value":...}`)
	}
	op, _ := obj["operation"].(string)
	if op == "" {
		op, _ = obj["op"].(string)
	}
	for k := range obj {
		if k != "operation" && k != "op" && k != "value" {
			return nil, "", "", badField(field+"."+k, `is not a field of a tag operation: {"operation":"increment|append|remove","value":...}`)
		}
	}
	if !hasValue || value == nil {
		return nil, "", "", badField(field+".value", "is required")
	}
	switch strings.ToLower(op) {
	case schemas.OpIncrement:
		n, ok := value.(json.Number)
		if !ok {
			return nil, "", "", badField(field+".value", "increment takes a number")
		}
		if aerr := checkNumber(field+".value", n); aerr != nil {
			return nil, "", "", aerr
		}
		typ := declared
		if typ == "" {
			typ = inferTagType(n)
		}
		if typ != schemas.TagInteger && typ != schemas.TagDecimal {
			return nil, "", "", badField(field, "increment works on integer and decimal tags, not %s", typ)
		}
		if typ == schemas.TagInteger && !isInteger(n) {
			return nil, "", "", badField(field+".value", "is not an integer, and the tag is")
		}
		return n, typ, schemas.OpIncrement, nil
	case schemas.OpAppend, schemas.OpRemove:
		if declared != "" && declared != schemas.TagList {
			return nil, "", "", badField(field, "%s works on list tags, not %s", op, declared)
		}
		if s, ok := value.(string); ok {
			value = []any{s}
		}
		l, ok := value.([]any)
		if !ok {
			return nil, "", "", badField(field+".value", "%s takes a list of strings", op)
		}
		if aerr := checkValue(field+".value", l, tagRules); aerr != nil {
			return nil, "", "", aerr
		}
		return l, schemas.TagList, strings.ToLower(op), nil
	case "":
		return nil, "", "", badField(field+".operation", `is required for a tag object: "increment", "append" or "remove"`)
	}
	return nil, "", "", badField(field+".operation", "%s is not an operation: want increment, append or remove", quote(op))
}
