package dispatcher

import "github.com/heraldhq/herald/internal/jsonscan"

// This file is decodeResponse's fast path for the answer to an accepted
// send, {"messaging_product":"whatsapp","contacts":[{"input":...,"wa_id":...}],
// "messages":[{"id":...,"message_status":...}]}: one pass over the bytes
// for messages[0].id, where encoding/json's reflection was a few percent
// of a send's CPU. It takes only that shape, with exactly those keys, no
// duplicates, and strings without escapes (jsonscan); on
// anything else (an error object, other keys, a key in another case, any
// syntax error) it gives up and decodeResponse runs encoding/json.
// TestAcceptedIDMatchesJSON and FuzzAcceptedID compare the two.

// graphScan is the state of one fast decode.
type graphScan struct{ jsonscan.Scanner }

// acceptedID returns messages[0].id of an accepted send's answer, or false
// when encoding/json must decode it (or the id is empty).
func acceptedID(b []byte) (string, bool) {
	s := graphScan{Scanner: jsonscan.Scanner{B: b}}
	var id string
	var seenProduct, seenContacts, seenMessages bool
	ok := s.Object(func(key []byte) bool {
		switch string(key) {
		case "messaging_product":
			if seenProduct {
				return false
			}
			seenProduct = true
			return s.skipStr()
		case "contacts":
			if seenContacts {
				return false
			}
			seenContacts = true
			return s.contacts()
		case "messages":
			if seenMessages {
				return false
			}
			seenMessages = true
			var ok bool
			id, ok = s.messages()
			return ok
		}
		return false
	})
	if !ok || !s.End() || id == "" {
		return "", false
	}
	return id, true
}

// contacts checks an array of objects of strings.
func (s *graphScan) contacts() bool {
	return s.Array(func(int) bool {
		return s.Object(func([]byte) bool { return s.skipStr() })
	})
}

// messages decodes an array of {"id","message_status"} objects and
// returns the first one's id.
func (s *graphScan) messages() (string, bool) {
	var first string
	ok := s.Array(func(n int) bool {
		var id string
		var seenID, seenStatus bool
		ok := s.Object(func(key []byte) bool {
			var ok bool
			switch string(key) {
			case "id":
				if seenID {
					return false
				}
				seenID = true
				id, ok = s.str()
			case "message_status":
				if seenStatus {
					return false
				}
				seenStatus = true
				ok = s.skipStr()
			}
			return ok
		})
		if n == 0 {
			first = id
		}
		return ok
	})
	return first, ok
}

// str decodes a string without escapes.
func (s *graphScan) str() (string, bool) {
	b, ok := s.RawStr()
	return string(b), ok
}

// skipStr checks a string without escapes that is not kept.
func (s *graphScan) skipStr() bool {
	_, ok := s.RawStr()
	return ok
}
