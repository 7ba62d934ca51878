package dispatcher

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
)

// acceptedSamples are answers to accepted sends as Meta (and the
// simulator) write them; acceptedID must take each.
var acceptedSamples = []string{
	`{"messaging_product":"whatsapp","contacts":[{"input":"+15551234567","wa_id":"15551234567"}],"messages":[{"id":"wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA","message_status":"accepted"}]}`,
	`{"messaging_product":"whatsapp","contacts":[{"input":"15551234567","wa_id":"15551234567"}],"messages":[{"id":"wamid.X"}]}`,
	"{ \"messages\" : [ { \"id\" : \"wamid.Y\" } , { \"id\" : \"wamid.Z\" } ] , \"contacts\" : [ ] }\n",
}

// checkAcceptedID fails t when acceptedID takes b and encoding/json does
// not find the same id without an error object; it reports whether
// acceptedID took b.
func checkAcceptedID(t *testing.T, b []byte) bool {
	t.Helper()
	id, ok := acceptedID(b)
	if !ok {
		return false
	}
	var r graphResponse
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("acceptedID took %q, encoding/json refused it: %v", b, err)
	}
	if r.Error != nil || len(r.Messages) == 0 || r.Messages[0].ID != id {
		t.Fatalf("acceptedID(%q) = %q, encoding/json decoded %+v", b, id, r)
	}
	return true
}

func TestAcceptedIDMatchesJSON(t *testing.T) {
	for _, s := range acceptedSamples {
		if !checkAcceptedID(t, []byte(s)) {
			t.Errorf("acceptedID gave up on %s", s)
		}
		if id, err := decodeResponse(200, []byte(s)); err != nil || id == "" {
			t.Errorf("decodeResponse(200, %s) = %q, %v", s, id, err)
		}
	}
	for _, s := range []string{
		`{"error":{"message":"x","type":"OAuthException","code":131056}}`,
		`{"messages":[{"id":"a"}],"error":{"code":1}}`,
		`{"Messages":[{"id":"a"}]}`,
		`{"messages":[{"ID":"a"}]}`,
		`{"messages":[{"id":"a","id":"b"}]}`,
		`{"messages":[{"id":"a"}],"messages":[{"id":"b"}]}`,
		`{"messages":[{"id":"a\u0062"}]}`,
		`{"messages":[{"id":""}]}`,
		`{"messages":[]}`,
		`{"messages":[{"id":"a"}]} x`,
		`{"messages":[{"id":"a"}],}`,
		`{"messages":[{"id":null}]}`,
		`{"messages":[{"id":"a"}],"contacts":[{"wa_id":1}]}`,
		"{\"messages\":[{\"id\":\"\xff\"}]}",
		``,
	} {
		if checkAcceptedID(t, []byte(s)) {
			t.Errorf("acceptedID took %s", s)
		}
	}
	rng := rand.New(rand.NewPCG(9, 10))
	alphabet := []byte(`{}[]":, \n0aAiIdD` + "\xff")
	took := 0
	const n = 20000
	for range n {
		b := []byte(acceptedSamples[rng.IntN(len(acceptedSamples))])
		for range 1 + rng.IntN(2) {
			i := rng.IntN(len(b))
			switch rng.IntN(3) {
			case 0:
				b[i] = alphabet[rng.IntN(len(alphabet))]
			case 1:
				b = append(b[:i], b[i+1:]...)
			case 2:
				b = append(b[:i], append([]byte{b[i]}, b[i:]...)...)
			}
		}
		if checkAcceptedID(t, b) {
			took++
		}
	}
	if took == 0 || took == n {
		t.Errorf("acceptedID took %d of %d damaged answers", took, n)
	}
}

// FuzzAcceptedID checks on arbitrary answers that what acceptedID takes,
// encoding/json decodes to the same id.
//
//	go test -run '^$' -fuzz FuzzAcceptedID ./dispatcher/
func FuzzAcceptedID(f *testing.F) {
	for _, s := range acceptedSamples {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkAcceptedID(t, b)
	})
}
