package wasim

import (
	"strconv"

	"github.com/heraldhq/herald/internal/jsonscan"
)

// This file is decodeSend's fast path: a single-pass decoder of the send
// request shapes senders post most (a template with text parameters, a
// text message), used before encoding/json on every send (its reflection
// was the largest part of the simulator's CPU per send in the dispatcher's
// benchmarks).
//
// It either fills the sendRequest exactly as a json.Decoder with
// DisallowUnknownFields would, the request ending after the object, or it
// gives up and decodeSend runs encoding/json on the body, so every refusal
// and its message stay encoding/json's (TestDecodeSendFastMatchesJSON and
// FuzzDecodeSendFast compare the two). It gives up on:
//
//   - any syntax error, and anything but whitespace after the object;
//   - null for a field, a duplicate field, a key that is not a field it
//     decodes (an unknown key, one that differs in case, the rarer fields:
//     image, interactive, context, mark-as-read, parameters other than text);
//   - a value of another JSON type than the field's, an index that is not an
//     integer;
//   - escapes and invalid UTF-8 in strings (encoding/json unescapes them and
//     replaces invalid UTF-8 with U+FFFD).

// fastScan is the state of one fast decode.
type fastScan struct{ jsonscan.Scanner }

// decodeSendFast decodes body into r, or reports false when encoding/json
// must (r is then in an undefined state).
func decodeSendFast(body []byte, r *sendRequest) bool {
	s := fastScan{Scanner: jsonscan.Scanner{B: body}}
	var seen uint32
	return s.Object(func(key []byte) bool { return s.sendField(key, r, &seen) }) && s.End()
}

// sendField decodes the value of a top-level key into r.
func (s *fastScan) sendField(key []byte, r *sendRequest, seen *uint32) bool {
	switch string(key) {
	case "messaging_product":
		return first(seen, 0) && s.str(&r.MessagingProduct)
	case "recipient_type":
		return first(seen, 1) && s.str(&r.RecipientType)
	case "to":
		return first(seen, 2) && s.str(&r.To)
	case "type":
		return first(seen, 3) && s.str(&r.Type)
	case "biz_opaque_callback_data":
		return first(seen, 4) && s.str(&r.BizOpaque)
	case "template":
		if !first(seen, 5) {
			return false
		}
		r.Template = new(templateMsg)
		return s.template(r.Template)
	case "text":
		if !first(seen, 6) {
			return false
		}
		r.Text = new(textMsg)
		return s.text(r.Text)
	}
	return false
}

// template decodes a template object.
func (s *fastScan) template(t *templateMsg) bool {
	var seen uint32
	return s.Object(func(key []byte) bool {
		switch string(key) {
		case "name":
			return first(&seen, 0) && s.str(&t.Name)
		case "namespace":
			return first(&seen, 1) && s.str(&t.Namespace)
		case "language":
			if !first(&seen, 2) {
				return false
			}
			t.Language = new(language)
			return s.language(t.Language)
		case "components":
			return first(&seen, 3) && s.components(&t.Components)
		}
		return false
	})
}

// language decodes a template's language object.
func (s *fastScan) language(l *language) bool {
	var seen uint32
	return s.Object(func(key []byte) bool {
		switch string(key) {
		case "code":
			return first(&seen, 0) && s.str(&l.Code)
		case "policy":
			return first(&seen, 1) && s.str(&l.Policy)
		}
		return false
	})
}

// components decodes a template's components array. An empty array is an
// empty, non-nil slice, as encoding/json makes it.
func (s *fastScan) components(cs *[]component) bool {
	*cs = []component{}
	return s.Array(func(int) bool {
		*cs = append(*cs, component{})
		return s.component(&(*cs)[len(*cs)-1])
	})
}

// component decodes one component object.
func (s *fastScan) component(c *component) bool {
	var seen uint32
	return s.Object(func(key []byte) bool {
		switch string(key) {
		case "type":
			return first(&seen, 0) && s.str(&c.Type)
		case "sub_type":
			return first(&seen, 1) && s.str(&c.SubType)
		case "index":
			if !first(&seen, 2) {
				return false
			}
			c.Index = new(flexIndex)
			return s.index(c.Index)
		case "parameters":
			return first(&seen, 3) && s.parameters(&c.Parameters)
		}
		return false
	})
}

// parameters decodes a component's parameters array.
func (s *fastScan) parameters(ps *[]parameter) bool {
	*ps = []parameter{}
	return s.Array(func(n int) bool {
		if n == 0 {
			// Room for the usual few: growing from one element to two
			// to four copies the large parameter struct.
			*ps = make([]parameter, 0, 4)
		}
		*ps = append(*ps, parameter{})
		return s.parameter(&(*ps)[len(*ps)-1])
	})
}

// parameter decodes one parameter object: type, text and parameter_name
// (the other kinds go to encoding/json).
func (s *fastScan) parameter(p *parameter) bool {
	var seen uint32
	return s.Object(func(key []byte) bool {
		switch string(key) {
		case "type":
			return first(&seen, 0) && s.str(&p.Type)
		case "parameter_name":
			return first(&seen, 1) && s.str(&p.ParameterName)
		case "text":
			if !first(&seen, 2) {
				return false
			}
			p.Text = new(string)
			return s.str(p.Text)
		}
		return false
	})
}

// text decodes a text message object.
func (s *fastScan) text(t *textMsg) bool {
	var seen uint32
	return s.Object(func(key []byte) bool {
		switch string(key) {
		case "body":
			return first(&seen, 0) && s.str(&t.Body)
		case "preview_url":
			return first(&seen, 1) && s.boolean(&t.PreviewURL)
		}
		return false
	})
}

// first marks field bit n as seen and reports false when it was already
// (a duplicate key, which encoding/json merges or overwrites).
func first(seen *uint32, n uint) bool {
	if *seen&(1<<n) != 0 {
		return false
	}
	*seen |= 1 << n
	return true
}

// str decodes a string into v; the values every send repeats come from
// constants instead of a new allocation each.
func (s *fastScan) str(v *string) bool {
	b, ok := s.RawStr()
	if !ok {
		return false
	}
	switch string(b) {
	case "whatsapp":
		*v = "whatsapp"
	case "individual":
		*v = "individual"
	case "template":
		*v = "template"
	case "text":
		*v = "text"
	case "body":
		*v = "body"
	case "header":
		*v = "header"
	case "button":
		*v = "button"
	case "url":
		*v = "url"
	default:
		*v = string(b)
	}
	return true
}

// boolean decodes true or false into v.
func (s *fastScan) boolean(v *bool) bool {
	s.WS()
	switch rest := s.B[s.I:]; {
	case len(rest) >= 4 && string(rest[:4]) == "true":
		*v = true
		s.I += 4
	case len(rest) >= 5 && string(rest[:5]) == "false":
		*v = false
		s.I += 5
	default:
		return false
	}
	// "truex" ends the literal where no separator follows: the caller's
	// next step finds no ',' or '}' and gives up.
	return true
}

// index decodes a button index as flexIndex does: a string or an integer,
// its digits through strconv.Atoi.
func (s *fastScan) index(v *flexIndex) bool {
	s.WS()
	if s.I >= len(s.B) {
		return false
	}
	var digits []byte
	if s.B[s.I] == '"' {
		b, ok := s.RawStr()
		if !ok {
			return false
		}
		digits = b
	} else {
		// A JSON integer: -?(0|[1-9][0-9]*), no fraction or exponent.
		start := s.I
		j := start
		if j < len(s.B) && s.B[j] == '-' {
			j++
		}
		d := j
		for j < len(s.B) && s.B[j] >= '0' && s.B[j] <= '9' {
			j++
		}
		if j == d || (s.B[d] == '0' && j-d > 1) {
			return false
		}
		if j < len(s.B) {
			if c := s.B[j]; c == '.' || c == 'e' || c == 'E' {
				return false
			}
		}
		digits = s.B[start:j]
		s.I = j
	}
	n, err := strconv.Atoi(string(digits))
	if err != nil {
		return false
	}
	*v = flexIndex(n)
	return true
}
