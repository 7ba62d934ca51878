package schemas

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"
)

// TestDispatchAppendJSON checks that the reflection-free encoding of
// dispatch requests is byte for byte encoding/json's, over random requests
// of every channel with optional fields set or not, strings that need
// escaping, maps, and times in and out of MarshalJSON's range.
func TestDispatchAppendJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	strs := []string{"", "a", "promo_offer", `q"u\o`, "<b>&amp;</b>", "line\nbreak\ttab\x01", "\u2028x\u2029", "bad\xffutf8", "sushi 🍣 ünï"}
	s := func() string { return strs[rng.IntN(len(strs))] }
	maybe := func() bool { return rng.IntN(2) == 0 }
	times := []time.Time{
		{},
		time.Date(2026, 12, 1, 19, 0, 0, 0, time.UTC),
		time.Date(2026, 12, 1, 19, 0, 0, 123456000, time.UTC),
		time.Date(2026, 12, 1, 19, 0, 0, 0, time.FixedZone("IST", 5*3600+1800)),
		time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	tm := func() time.Time { return times[rng.IntN(len(times))] }
	list := func() []string {
		switch rng.IntN(3) {
		case 0:
			return nil
		case 1:
			return []string{}
		}
		l := make([]string, 1+rng.IntN(3))
		for i := range l {
			l[i] = s()
		}
		return l
	}
	fast := 0
	for i := range 5000 {
		d := &DispatchRequest{
			V: V1, ID: s(), App: s(), Channel: Channel(s()), Sender: s(), To: s(), HWID: s(), UserID: s(), Country: s(),
			Source: Source{Kind: s(), Name: s(), EventID: s()}, Created: tm(), Deadline: tm(), SendAt: tm(), WindowUntil: tm(),
		}
		if maybe() {
			d.Template = &Template{Name: s(), Language: s(), Category: s(), Body: list(), Header: list()}
			if maybe() {
				d.Template.ButtonURL = map[int]string{}
				for range rng.IntN(12) {
					d.Template.ButtonURL[rng.IntN(20)-2] = s()
				}
			}
		}
		if maybe() {
			d.Text = &Text{Body: s(), PreviewURL: maybe()}
		}
		if maybe() {
			d.Email = &Email{Subject: s(), Text: s(), HTML: s(), FromName: s(), ReplyTo: s(), Template: s()}
		}
		if maybe() {
			d.Push = &Push{Title: s(), Body: s(), Template: s()}
			if maybe() {
				d.Push.Data = map[string]string{s(): s(), s(): s(), s(): s()}
			}
		}
		if rng.IntN(4) == 0 {
			d.Webhook = &Webhook{URL: s()}
			if maybe() {
				d.Webhook.Body = map[string]any{"k": s()}
			}
		}
		want, werr := json.Marshal(d)
		got, ok := d.appendJSON(nil)
		if !ok {
			if _, err := d.Marshal(); (err != nil) != (werr != nil) {
				t.Fatalf("request %d: Marshal error %v, encoding/json %v", i, err, werr)
			}
			continue
		}
		fast++
		if werr != nil {
			t.Fatalf("request %d: appendJSON wrote %s where encoding/json refuses: %v", i, got, werr)
		}
		if string(got) != string(want) {
			t.Fatalf("request %d:\n got %s\nwant %s", i, got, want)
		}
	}
	if fast < 1000 {
		t.Fatalf("only %d of 5000 requests took the fast path", fast)
	}
}

// TestOutcomeAppendJSON and TestDeliveryMarkAppendJSON: the
// reflection-free encodings of outcomes and intents are byte for byte
// encoding/json's, over random records.
func TestOutcomeAppendJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	strs := []string{"", "a", "1001", `q"u\o`, "<b>&</b>", "nl\n\x01", "\u2028", "bad\xff", "ünï 🍣"}
	s := func() string { return strs[rng.IntN(len(strs))] }
	times := []time.Time{{}, time.Date(2026, 12, 1, 19, 0, 0, 123000000, time.UTC), time.Date(2026, 12, 1, 19, 0, 0, 0, time.FixedZone("x", -3*3600)), time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC)}
	tm := func() time.Time { return times[rng.IntN(len(times))] }
	fast := 0
	for i := range 3000 {
		o := &Outcome{
			V: V1, DispatchID: s(), App: s(), Channel: Channel(s()), Sender: s(), To: s(), Country: s(), State: OutcomeState(s()),
			ProviderID: s(), Template: s(), Category: s(), Source: Source{Kind: s(), Name: s(), EventID: s()},
			ErrorCode: rng.IntN(3) * 131000, ErrorMessage: s(), InvalidRecipient: rng.IntN(2) == 0, Attempts: rng.IntN(3),
			Reconciled: rng.IntN(2) == 0, Requested: tm(), Time: tm(),
		}
		want, werr := json.Marshal(o)
		got, ok := o.appendJSON(nil)
		if !ok {
			continue
		}
		fast++
		if werr != nil || string(got) != string(want) {
			t.Fatalf("outcome %d: %v\n got %s\nwant %s", i, werr, got, want)
		}
	}
	if fast < 500 {
		t.Fatalf("only %d of 3000 outcomes took the fast path", fast)
	}
}

func TestDeliveryMarkAppendJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	strs := []string{"", "intent", "wamid.x", `q"u\o`, "<&>", "nl\n", "bad\xff"}
	s := func() string { return strs[rng.IntN(len(strs))] }
	times := []time.Time{{}, time.Date(2026, 12, 1, 19, 0, 0, 5, time.UTC), time.Date(-5, 1, 1, 0, 0, 0, 0, time.UTC)}
	fast := 0
	for i := range 2000 {
		m := &DeliveryMark{
			V: V1, Kind: MarkKind(s()), DispatchID: s(), App: s(), To: s(), Sender: s(), Attempt: rng.IntN(3),
			WAMID: s(), Status: s(), ErrorCode: rng.IntN(2) * 131026, Time: times[rng.IntN(len(times))],
		}
		want, werr := json.Marshal(m)
		got, ok := m.appendJSON(nil)
		if !ok {
			continue
		}
		fast++
		if werr != nil || string(got) != string(want) {
			t.Fatalf("mark %d: %v\n got %s\nwant %s", i, werr, got, want)
		}
	}
	if fast < 500 {
		t.Fatalf("only %d of 2000 marks took the fast path", fast)
	}
}
