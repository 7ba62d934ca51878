// Package jsonscan is the byte scanner under Herald's one-shape JSON fast
// paths outside schemas: the WhatsApp simulator's decoding of a send
// request (internal/wasim) and the dispatcher's reading of an accepted
// send's answer. Each of those walks its one shape with a Scanner and
// gives up, handing the input to encoding/json, on anything the scanner
// does not take: it takes keys of ASCII without escapes and strings without
// escapes of valid UTF-8, the forms encoding/json decodes byte for byte, so
// a fast path built on it decodes exactly what encoding/json would or
// nothing. (schemas has its own decoder, fastDec, which also unescapes.)
package jsonscan

import "unicode/utf8"

// Scanner is the position I in the input B. The zero value of I is the
// start of B.
type Scanner struct {
	B []byte
	I int
}

// WS skips JSON whitespace.
func (s *Scanner) WS() {
	for s.I < len(s.B) {
		switch s.B[s.I] {
		case ' ', '\t', '\n', '\r':
			s.I++
		default:
			return
		}
	}
}

// Lit consumes the byte c ('{', '[', ':', ...) after whitespace, and
// reports whether it was there.
func (s *Scanner) Lit(c byte) bool {
	s.WS()
	if s.I < len(s.B) && s.B[s.I] == c {
		s.I++
		return true
	}
	return false
}

// NextKey moves to the next key of an object whose '{' was consumed and
// returns it with the ':' after it consumed; done when the object closed
// instead. first is true for the first call of an object. A key with an
// escape or a byte outside ASCII is not taken (ok false): it may spell a
// field name encoding/json would match.
func (s *Scanner) NextKey(first bool) (key []byte, done, ok bool) {
	s.WS()
	if s.I >= len(s.B) {
		return nil, false, false
	}
	switch c := s.B[s.I]; {
	case c == '}':
		s.I++
		return nil, true, true
	case first:
	case c == ',':
		s.I++
		s.WS()
	default:
		return nil, false, false
	}
	if s.I >= len(s.B) || s.B[s.I] != '"' {
		return nil, false, false
	}
	start := s.I + 1
	j := start
	for j < len(s.B) && s.B[j] != '"' {
		if c := s.B[j]; c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			return nil, false, false
		}
		j++
	}
	if j >= len(s.B) {
		return nil, false, false
	}
	key = s.B[start:j]
	s.I = j + 1
	if !s.Lit(':') {
		return nil, false, false
	}
	return key, false, true
}

// NextElem moves to the next element of an array whose '[' was consumed;
// done when the array closed instead. first is true for the first call of
// an array.
func (s *Scanner) NextElem(first bool) (done, ok bool) {
	s.WS()
	if s.I >= len(s.B) {
		return false, false
	}
	switch c := s.B[s.I]; {
	case c == ']':
		s.I++
		return true, true
	case first:
		return false, true
	case c == ',':
		s.I++
		return false, true
	}
	return false, false
}

// RawStr returns the contents of a string, after whitespace, that has no
// escapes and is valid UTF-8 (ok false for any other value).
func (s *Scanner) RawStr() ([]byte, bool) {
	s.WS()
	if s.I >= len(s.B) || s.B[s.I] != '"' {
		return nil, false
	}
	start := s.I + 1
	ascii := true
	for j := start; j < len(s.B); j++ {
		switch c := s.B[j]; {
		case c == '"':
			if !ascii && !utf8.Valid(s.B[start:j]) {
				return nil, false
			}
			s.I = j + 1
			return s.B[start:j], true
		case c == '\\', c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, false
}

// Object decodes an object, after whitespace: field is called with each
// key, the value next in the input, and must consume it (or report false,
// which ends Object with false).
func (s *Scanner) Object(field func(key []byte) bool) bool {
	if !s.Lit('{') {
		return false
	}
	for n := 0; ; n++ {
		key, done, ok := s.NextKey(n == 0)
		if !ok {
			return false
		}
		if done {
			return true
		}
		if !field(key) {
			return false
		}
	}
}

// Array decodes an array, after whitespace: elem is called for each
// element, n its index, and must consume it (or report false, which ends
// Array with false).
func (s *Scanner) Array(elem func(n int) bool) bool {
	if !s.Lit('[') {
		return false
	}
	for n := 0; ; n++ {
		done, ok := s.NextElem(n == 0)
		if !ok {
			return false
		}
		if done {
			return true
		}
		if !elem(n) {
			return false
		}
	}
}

// End reports whether only whitespace is left.
func (s *Scanner) End() bool {
	s.WS()
	return s.I == len(s.B)
}
