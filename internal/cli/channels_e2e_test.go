package cli

import (
	"context"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/chtest"
	"github.com/heraldhq/herald/internal/smtpsim"
	"github.com/heraldhq/herald/schemas"
)

// TestEmailAndPushEndToEnd: the dev stack sends an email through the SMTP
// sink and a push through the push simulator; the email's open pixel and a
// link are followed through ingest; ClickHouse holds both sends (their
// channel set) and the open and click events with the dispatch id.
func TestEmailAndPushEndToEnd(t *testing.T) {
	s, _, conn := channelsStack(t, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()

	now := time.Now().UTC()
	reqs := []*schemas.DispatchRequest{
		{
			ID: "mail-1", App: devAppID, Channel: schemas.ChannelEmail, To: "asha@example.com", HWID: "asha@example.com",
			Email: &schemas.Email{
				Subject: "Your sushi", Text: "Order: https://shop.example/sushi",
				HTML: `<p><a href="https://shop.example/sushi">Order</a></p>`,
			},
			Source: schemas.Source{Kind: "journey", Name: "omni"}, Created: now, Deadline: now.Add(time.Minute),
		},
		{
			ID: "push-1", App: devAppID, Channel: schemas.ChannelPush, To: "fcm-token-asha", HWID: "device-asha",
			Push:   &schemas.Push{Title: "Sushi", Body: "20% off"},
			Source: schemas.Source{Kind: "journey", Name: "omni"}, Created: now, Deadline: now.Add(time.Minute),
		},
	}
	cl, err := kgo.NewClient(s.kcfg.Opts(nil)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, r := range reqs {
		b, _ := r.Marshal()
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: schemas.TopicDispatch, Key: r.Key(), Value: b}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	msgs, err := s.sims.smtp.WaitMessages(ctx, 1)
	if err != nil {
		t.Fatalf("no email reached the SMTP sink: %v", err)
	}
	htmlPart := htmlOf(t, msgs[0])
	pixel := regexp.MustCompile(`<img src="([^"]+)"`).FindStringSubmatch(htmlPart)
	link := regexp.MustCompile(`<a href="([^"]+)"`).FindStringSubmatch(htmlPart)
	if pixel == nil || link == nil || !strings.HasPrefix(pixel[1], s.ingestSrv.URL()) || !strings.HasPrefix(link[1], s.ingestSrv.URL()) {
		t.Fatalf("tracking links missing or not pointing at ingest in %s", htmlPart)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, u := range []string{pixel[1], strings.ReplaceAll(link[1], "&amp;", "&")} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 && (resp.StatusCode != 302 || resp.Header.Get("Location") != "https://shop.example/sushi") {
			t.Fatalf("GET %s: %d Location %q", u, resp.StatusCode, resp.Header.Get("Location"))
		}
	}

	deadline := time.Now().Add(60 * time.Second)
	q := map[string]string{
		"sends":  "SELECT count() FROM messages FINAL WHERE state = 'accepted' AND ((channel = 'email' AND dispatch_id = 'mail-1' AND sender = '" + devEmailFrom + "') OR (channel = 'push' AND dispatch_id = 'push-1' AND sender = '" + devFCMProject + "'))",
		"opens":  "SELECT count() FROM events FINAL WHERE name = 'PW_EmailOpened' AND hwid = 'asha@example.com' AND arrayElement(attr_values, indexOf(attr_keys, 'dispatch_id')) = 'mail-1'",
		"clicks": "SELECT count() FROM events FINAL WHERE name = 'PW_EmailClicked' AND arrayElement(attr_values, indexOf(attr_keys, 'url')) = 'https://shop.example/sushi'",
	}
	want := map[string]uint64{"sends": 2, "opens": 1, "clicks": 1}
	for {
		done := true
		got := map[string]uint64{}
		for k, sql := range q {
			got[k] = chtest.Count(t, conn, sql)
			if got[k] != want[k] {
				done = false
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ClickHouse after 60s: %v, want %v", got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if pm := s.sims.fcm.Messages(); len(pm) != 1 || pm[0].Token != "fcm-token-asha" || pm[0].Data["herald_dispatch_id"] != "push-1" {
		t.Fatalf("push simulator got %+v", pm)
	}
}

// htmlOf returns the decoded text/html part of a multipart/alternative
// message.
func htmlOf(t *testing.T, m smtpsim.Message) string {
	t.Helper()
	pm, err := m.Parse()
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(pm.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(pm.Body, params["boundary"])
	for {
		p, err := mr.NextPart() // decodes quoted-printable
		if err != nil {
			t.Fatalf("no html part: %v", err)
		}
		if strings.HasPrefix(p.Header.Get("Content-Type"), "text/html") {
			b, err := io.ReadAll(p)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
	}
}
