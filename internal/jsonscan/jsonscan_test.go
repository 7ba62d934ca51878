package jsonscan

import (
	"encoding/json"
	"reflect"
	"testing"
)

// decodeStrings decodes an object of strings with a Scanner, or reports
// false when it gives up.
func decodeStrings(b []byte) (map[string]string, bool) {
	s := Scanner{B: b}
	if !s.Lit('{') {
		return nil, false
	}
	m := map[string]string{}
	for n := 0; ; n++ {
		key, done, ok := s.NextKey(n == 0)
		if !ok {
			return nil, false
		}
		if done {
			break
		}
		if _, dup := m[string(key)]; dup {
			return nil, false // encoding/json keeps the last: not this decoder's job
		}
		v, ok := s.RawStr()
		if !ok {
			return nil, false
		}
		m[string(key)] = string(v)
	}
	return m, s.End()
}

// decodeStringLists decodes an array of arrays of strings.
func decodeStringLists(b []byte) ([][]string, bool) {
	s := Scanner{B: b}
	if !s.Lit('[') {
		return nil, false
	}
	out := [][]string{}
	for n := 0; ; n++ {
		done, ok := s.NextElem(n == 0)
		if !ok {
			return nil, false
		}
		if done {
			break
		}
		if !s.Lit('[') {
			return nil, false
		}
		l := []string{}
		for k := 0; ; k++ {
			done, ok := s.NextElem(k == 0)
			if !ok {
				return nil, false
			}
			if done {
				break
			}
			v, ok := s.RawStr()
			if !ok {
				return nil, false
			}
			l = append(l, string(v))
		}
		out = append(out, l)
	}
	return out, s.End()
}

var samples = []string{
	`{}`, ` { "a" : "b" , "c":"d" } `, `{"a":"é😀"}`, `{"a":"\u00e9"}`, `{"é":"x"}`, `{"a":"b",}`, `{"a" "b"}`,
	`{"a":"b"} x`, `{"a":"\xff"}`, `{"a":1}`, `{"a":"b"`, `{"a":"tab	"}`, `{,"a":"b"}`,
	`[]`, `[[]]`, ` [ ["a", "b"] , [] ] `, `[["a",]]`, `[,["a"]]`, `[["a"]`, `[["a"]] [`, `[["\"x"]]`,
}

// TestScannerMatchesJSON: what a Scanner decodes, encoding/json decodes
// to the same values.
func TestScannerMatchesJSON(t *testing.T) {
	taken := 0
	for _, in := range samples {
		check(t, []byte(in), &taken)
	}
	if taken < 6 {
		t.Fatalf("the scanner took %d samples: too few", taken)
	}
}

func check(t *testing.T, b []byte, taken *int) {
	t.Helper()
	if m, ok := decodeStrings(b); ok {
		*taken++
		var want map[string]string
		if err := json.Unmarshal(b, &want); err != nil || !reflect.DeepEqual(m, want) {
			t.Fatalf("%q: scanner %v, encoding/json %v (%v)", b, m, want, err)
		}
	}
	if l, ok := decodeStringLists(b); ok {
		*taken++
		var want [][]string
		if err := json.Unmarshal(b, &want); err != nil || !reflect.DeepEqual(l, want) {
			t.Fatalf("%q: scanner %v, encoding/json %v (%v)", b, l, want, err)
		}
	}
}

func FuzzScanner(f *testing.F) {
	for _, in := range samples {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var n int
		check(t, b, &n)
	})
}
