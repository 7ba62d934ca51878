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
	if !s.Lit('{') {
		return "", false
	}
	var id string
	var seenProduct, seenContacts, seenMessages bool
	for n := 0; ; n++ {
		key, done, ok := s.NextKey(n == 0)
		if !ok {
			return "", false
		}
		if done {
			break
		}
		switch string(key) {
		case "messaging_product":
			if seenProduct {
				return "", false
			}
			seenProduct = true
			if _, ok := s.str(); !ok {
				return "", false
			}
		case "contacts":
			if seenContacts || !s.contacts() {
				return "", false
			}
			seenContacts = true
		case "messages":
			if seenMessages {
				return "", false
			}
			seenMessages = true
			if id, ok = s.messages(); !ok {
				return "", false
			}
		default:
			return "", false
		}
	}
	if !s.End() || id == "" {
		return "", false
	}
	return id, true
}

// contacts checks an array of objects of strings.
func (s *graphScan) contacts() bool {
	return s.array(func() bool {
		if !s.Lit('{') {
			return false
		}
		for n := 0; ; n++ {
			_, done, ok := s.NextKey(n == 0)
			if !ok {
				return false
			}
			if done {
				return true
			}
			if _, ok := s.str(); !ok {
				return false
			}
		}
	})
}

// messages decodes an array of {"id","message_status"} objects and
// returns the first one's id.
func (s *graphScan) messages() (string, bool) {
	var first string
	elem := 0
	ok := s.array(func() bool {
		var id string
		var seenID, seenStatus bool
		if !s.Lit('{') {
			return false
		}
		for n := 0; ; n++ {
			key, done, ok := s.NextKey(n == 0)
			if !ok {
				return false
			}
			if done {
				break
			}
			switch string(key) {
			case "id":
				if seenID {
					return false
				}
				seenID = true
				if id, ok = s.str(); !ok {
					return false
				}
			case "message_status":
				if seenStatus {
					return false
				}
				seenStatus = true
				if _, ok := s.str(); !ok {
					return false
				}
			default:
				return false
			}
		}
		if elem == 0 {
			first = id
		}
		elem++
		return true
	})
	return first, ok
}

// str decodes a string without escapes.
func (s *graphScan) str() (string, bool) {
	b, ok := s.RawStr()
	return string(b), ok
}

// array calls elem for each element of an array (elem consumes it).
func (s *graphScan) array(elem func() bool) bool {
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
		if !elem() {
			return false
		}
	}
}
