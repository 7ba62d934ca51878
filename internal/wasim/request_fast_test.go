package wasim

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// checkFastDecode fails t when decodeSendFast accepts body and
// encoding/json does not decode it to the same request, and reports
// whether the fast path took it.
func checkFastDecode(t *testing.T, body []byte) bool {
	t.Helper()
	var fast sendRequest
	if !decodeSendFast(body, &fast) {
		return false
	}
	var slow sendRequest
	if gerr := decodeSendJSON(body, &slow); gerr != nil {
		t.Fatalf("fast path accepted what encoding/json refuses (%s): %q", gerr.Message, body)
	}
	if !reflect.DeepEqual(fast, slow) {
		fj, _ := json.Marshal(fast)
		sj, _ := json.Marshal(slow)
		t.Fatalf("fast path decoded %q\nas   %s\nwant %s", body, fj, sj)
	}
	return true
}

func TestDecodeSendFastMatchesJSON(t *testing.T) {
	// What the dispatcher and the tests post takes the fast path.
	for _, body := range []string{
		templateBody("+15551234567", "order_confirmation", "en_US", "Ann", "A-1"),
		templateBody("15550000000", "help_menu", "en_US"),
		textBody("+15551234567", "hi"),
		`{"messaging_product":"whatsapp","recipient_type":"individual","to":"+15551234567","type":"template","template":{"name":"t","language":{"code":"en_US"},"components":[{"type":"body","parameters":[{"type":"text","text":"A1"}]},{"type":"button","sub_type":"url","index":"0","parameters":[{"type":"text","text":"x"}]}]},"biz_opaque_callback_data":"b-1"}`,
		` { "messaging_product" : "whatsapp" , "to" : "1555123" , "text" : { "body" : "héllo ✓", "preview_url" : true } } ` + "\n",
		`{"messaging_product":"whatsapp","to":"1555123","type":"template","template":{"name":"a","namespace":"n","language":{"code":"en","policy":"deterministic"},"components":[{"type":"button","sub_type":"quick_reply","index":-0,"parameters":[]},{"type":"button","sub_type":"url","index":12,"parameters":[{"type":"text","text":"x","parameter_name":"p"}]}]}}`,
		`{"messaging_product":"whatsapp","template":{"components":[]}}`,
		`{"template":{"components":[{"index":"+1"}]}}`,
		`{}`,
	} {
		if !checkFastDecode(t, []byte(body)) {
			t.Errorf("fast path gave up on %s", body)
		}
	}
	// What it must leave to encoding/json.
	for _, body := range append(sendSeeds[3:7:7],
		`{"messaging_product":"whatsapp","To":"1555123"}`,
		`{"messaging_product":"whatsapp","to":"1555123","to":"1555124"}`,
		`{"messaging_product":"wh\u0061tsapp"}`,
		`{"messaging_product":"whatsapp","to":null}`,
		`{"messaging_product":"whatsapp","text":{"body":"a\xffb"}}`,
		`{"messaging_product":"whatsapp"} {}`,
		`{"template":{"components":[{"index":1.0}]}}`,
		`{"template":{"components":[{"index":01}]}}`,
		`{"template":{"components":[{"index":"x"}]}}`,
		`{"template":{"components":[{"index":99999999999999999999}]}}`,
		`{"text":{"preview_url":truex}}`,
		`{"text":{"preview_url":1}}`,
		`{"unknown":1}`,
		`{"to":"1",}`,
		`{"to":"1"`,
	) {
		if checkFastDecode(t, []byte(body)) {
			t.Errorf("fast path took %s", body)
		}
	}
	// And over random bodies near the shapes it decodes, both sides agree
	// on all the fast path takes, and it takes a good share of them.
	rng := rand.New(rand.NewPCG(1, 2))
	took := 0
	const n = 20000
	for range n {
		if checkFastDecode(t, []byte(randomSendBody(rng))) {
			took++
		}
	}
	if took < n/10 || took == n {
		t.Errorf("fast path took %d of %d random bodies", took, n)
	}
}

// randomSendBody writes a send request of random fields, values and
// spacing, now and then with what the fast path leaves to encoding/json
// (escapes, nulls, case variants, duplicates, odd numbers, damage).
func randomSendBody(rng *rand.Rand) string {
	var b strings.Builder
	odd := func() bool { return rng.IntN(40) == 0 }
	ws := func() {
		if rng.IntN(8) == 0 {
			b.WriteString([]string{" ", "\n", "\t ", "\r\n"}[rng.IntN(4)])
		}
	}
	str := func() {
		if odd() {
			b.WriteString([]string{`null`, `1`, `true`, `{}`, `[]`, `"a\"b"`, `"\u00e9"`, "\"a\xffb\"", `"a\nb"`}[rng.IntN(9)])
			return
		}
		b.WriteString([]string{`""`, `"whatsapp"`, `"+15551234567"`, `"individual"`, `"template"`, `"text"`, `"b-17"`, `"héllo"`, `"<&>"`, `"1555 123-4567"`}[rng.IntN(10)])
	}
	obj := func(fields []string, vals map[string]func()) {
		b.WriteByte('{')
		k := rng.IntN(len(fields) + 1)
		for i := range k {
			if i > 0 {
				ws()
				b.WriteByte(',')
			}
			ws()
			f := fields[rng.IntN(len(fields))]
			switch rng.IntN(60) {
			case 0:
				f = strings.ToUpper(f)
			case 1:
				f = "unknown"
			}
			b.WriteString(`"` + f + `"`)
			ws()
			b.WriteByte(':')
			ws()
			if v, ok := vals[strings.ToLower(f)]; ok && !odd() {
				v()
			} else {
				str()
			}
		}
		ws()
		b.WriteByte('}')
	}
	arr := func(elem func()) {
		if odd() {
			b.WriteString(`null`)
			return
		}
		b.WriteByte('[')
		for i := range rng.IntN(4) {
			if i > 0 {
				b.WriteByte(',')
			}
			ws()
			elem()
		}
		b.WriteByte(']')
	}
	index := func() {
		b.WriteString([]string{`0`, `"0"`, `9`, `"12"`, `-1`, `"-1"`, `01`, `"01"`, `1.0`, `1e0`, `"+1"`, `"x"`, `-`, `99999999999999999999`}[rng.IntN(14)])
	}
	param := func() {
		obj([]string{"type", "text", "parameter_name", "payload"}, nil)
	}
	comp := func() {
		obj([]string{"type", "sub_type", "index", "parameters"}, map[string]func(){
			"index":      index,
			"parameters": func() { arr(param) },
		})
	}
	boolean := func() { b.WriteString([]string{`true`, `false`, `0`, `truex`}[rng.IntN(4)]) }
	obj([]string{"messaging_product", "recipient_type", "to", "type", "biz_opaque_callback_data", "template", "text", "image"}, map[string]func(){
		"template": func() {
			obj([]string{"name", "namespace", "language", "components"}, map[string]func(){
				"language":   func() { obj([]string{"code", "policy"}, nil) },
				"components": func() { arr(comp) },
			})
		},
		"text":  func() { obj([]string{"body", "preview_url"}, map[string]func(){"preview_url": boolean}) },
		"image": func() { obj([]string{"id", "link"}, nil) },
	})
	ws()
	s := b.String()
	if odd() {
		s = s[:rng.IntN(len(s)+1)]
	}
	return s
}

// FuzzDecodeSendFast checks on arbitrary bodies that what the fast path
// decodes, encoding/json decodes to the same request.
func FuzzDecodeSendFast(f *testing.F) {
	for _, s := range sendSeeds {
		f.Add([]byte(s))
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20 {
		f.Add([]byte(randomSendBody(rng)))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkFastDecode(t, body)
	})
}

func TestAppendSendResponseMatchesJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	pieces := []string{"", "a", "+1555", "<", ">", "&", `"`, `\`, "\n", "\x01", "\u2028", "\u2029", "é", "\xff", "wamid.HBgL"}
	word := func() string {
		var b strings.Builder
		for range rng.IntN(5) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		return b.String()
	}
	for range 2000 {
		input, waID := word(), word()
		msg := sendMessageJSON{ID: word()}
		if rng.IntN(2) == 0 {
			msg.MessageStatus = word()
		}
		want, err := json.Marshal(sendResponseJSON{
			MessagingProduct: "whatsapp",
			Contacts:         []sendContactJSON{{Input: input, WAID: waID}},
			Messages:         []sendMessageJSON{msg},
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := appendSendResponse(nil, input, waID, msg); string(got) != string(want) {
			t.Fatalf("appendSendResponse(%q, %q, %+v)\n= %s\nwant %s", input, waID, msg, got, want)
		}
	}
}

func TestReadAllSized(t *testing.T) {
	f := func(body string, size, limit int64) {
		t.Helper()
		got, err := readAllSized(strings.NewReader(body), size, limit)
		if err != nil || string(got) != body {
			t.Fatalf("readAllSized(%d bytes, size %d, limit %d) = %d bytes, %v", len(body), size, limit, len(got), err)
		}
	}
	long := strings.Repeat("x", 2000)
	f("", 0, 10)
	f("abc", 3, 10)
	f("abc", 1, 10)    // longer than announced: grown
	f("abc", 100, 200) // shorter
	f(long, -1, 10)
	f(long, 2000, 100) // over the limit: not trusted for the buffer
	f(long, 2000, 1<<20)
}

func TestGraphVersionMatchesRE(t *testing.T) {
	for _, v := range []string{"v23.0", "v9.0", "v1.2", "v99.9", "v123.0", "v23.", "v23.00", "V23.0", "v2a.0", "23.0", "v.0", "", "v23.0\n", "v0.0", "x23.0", "v23x0", "v٣.0"} {
		if got, want := graphVersion(v), versionRE.MatchString(v); got != want {
			t.Errorf("graphVersion(%q) = %v, versionRE says %v", v, got, want)
		}
	}
}
