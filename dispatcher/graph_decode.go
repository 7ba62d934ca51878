package dispatcher

// This file is decodeResponse's fast path for the answer to an accepted
// send, {"messaging_product":"whatsapp","contacts":[{"input":...,"wa_id":...}],
// "messages":[{"id":...,"message_status":...}]}: one pass over the bytes
// for messages[0].id, where encoding/json's reflection was a few percent
// of a send's CPU. It takes only that shape, with exactly those keys, no
// duplicates, and strings without escapes or bytes outside ASCII; on
// anything else (an error object, other keys, a key in another case, any
// syntax error) it gives up and decodeResponse runs encoding/json.
// TestAcceptedIDMatchesJSON and FuzzAcceptedID compare the two.

// graphScan is the state of one fast decode.
type graphScan struct {
	b []byte
	i int
}

// acceptedID returns messages[0].id of an accepted send's answer, or false
// when encoding/json must decode it (or the id is empty).
func acceptedID(b []byte) (string, bool) {
	s := graphScan{b: b}
	if !s.lit('{') {
		return "", false
	}
	var id string
	var seenProduct, seenContacts, seenMessages bool
	for n := 0; ; n++ {
		key, done, ok := s.nextKey(n == 0)
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
	s.ws()
	if s.i != len(s.b) || id == "" {
		return "", false
	}
	return id, true
}

// contacts checks an array of objects of strings.
func (s *graphScan) contacts() bool {
	return s.array(func() bool {
		if !s.lit('{') {
			return false
		}
		for n := 0; ; n++ {
			_, done, ok := s.nextKey(n == 0)
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
		if !s.lit('{') {
			return false
		}
		for n := 0; ; n++ {
			key, done, ok := s.nextKey(n == 0)
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

// array calls elem for each element of an array (elem consumes it).
func (s *graphScan) array(elem func() bool) bool {
	if !s.lit('[') {
		return false
	}
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return true
	}
	for {
		if !elem() {
			return false
		}
		s.ws()
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			return true
		default:
			return false
		}
	}
}

// nextKey moves to the next key of an object whose '{' was consumed and
// returns it with its ':' consumed; done when the object closed instead.
func (s *graphScan) nextKey(firstKey bool) (key []byte, done, ok bool) {
	s.ws()
	if s.i >= len(s.b) {
		return nil, false, false
	}
	switch c := s.b[s.i]; {
	case c == '}':
		s.i++
		return nil, true, true
	case firstKey:
	case c == ',':
		s.i++
	default:
		return nil, false, false
	}
	k, ok := s.raw()
	if !ok || !s.lit(':') {
		return nil, false, false
	}
	return k, false, true
}

// str decodes a string of printable ASCII without escapes.
func (s *graphScan) str() (string, bool) {
	b, ok := s.raw()
	return string(b), ok
}

// raw returns the contents of a string of printable ASCII without escapes.
func (s *graphScan) raw() ([]byte, bool) {
	if !s.lit('"') {
		return nil, false
	}
	start := s.i
	for j := start; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			s.i = j + 1
			return s.b[start:j], true
		case c == '\\', c < 0x20, c >= 0x80:
			return nil, false
		}
	}
	return nil, false
}

// lit consumes c after whitespace.
func (s *graphScan) lit(c byte) bool {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// ws skips JSON whitespace.
func (s *graphScan) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}
