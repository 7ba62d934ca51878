package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/chtest"
)

// TestIdentityEndToEnd: a CDP's anonymous visitor orders Asian food, then
// signs in (Segment identify with both ids) and is later aliased; through
// the real ingest, the segmenter merges the visitor into the user, so the
// user is the member of the segment (the visitor left it), and a track the
// visitor's browser sends afterwards under the anonymous id counts on the
// user. ClickHouse shows the segment moves of both ids.
func TestIdentityEndToEnd(t *testing.T) {
	s, creds, conn := testStack(t)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	w := &workload{base: s.ingestSrv.URL(), token: creds.APIToken, app: devAppID}
	if err := w.post(ctx, "createFilter", map[string]any{"name": "cdp_asian", "filter_expression": `Event("Order Completed", "cuisine", EQ, "asian")`}); err != nil {
		t.Fatal(err)
	}
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(creds.SegmentWriteKey+":"))
	segment := func(path, body string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.ingestSrv.URL()+path, bytes.NewReader([]byte(body)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", basic)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s: HTTP %d: %s", path, resp.StatusCode, b)
		}
	}
	ts := func(m int) string {
		return time.Now().Add(time.Duration(m-30) * time.Minute).UTC().Format(time.RFC3339)
	}
	segment("/v1/track", fmt.Sprintf(`{"anonymousId":"visitor-1","messageId":"m1","event":"Order Completed","properties":{"cuisine":"asian"},"timestamp":%q}`, ts(1)))
	if err := s.waitDrained(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	segment("/v1/identify", fmt.Sprintf(`{"userId":"ana-7","anonymousId":"visitor-1","messageId":"m2","traits":{"plan":"pro"},"timestamp":%q}`, ts(2)))
	if err := s.waitDrained(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	segment("/v1/track", fmt.Sprintf(`{"anonymousId":"visitor-1","messageId":"m3","event":"Order Completed","properties":{"cuisine":"asian"},"timestamp":%q}`, ts(3)))
	if err := s.waitDrained(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	members, err := segmentMembers(ctx, s, "cdp_asian")
	if err != nil {
		t.Fatal(err)
	}
	visitor := chtest.Count(t, conn, "SELECT count() FROM events FINAL WHERE name = 'PW_SegmentExited' AND user_id = '' AND hwid = ''")
	user := chtest.Count(t, conn, "SELECT count() FROM events FINAL WHERE name = 'PW_SegmentEntered' AND user_id = 'ana-7'")
	if members != 1 || visitor != 1 || user != 1 {
		t.Fatalf("cdp_asian has %d members; the visitor's exits %d, the user's entries %d; want 1, 1, 1", members, visitor, user)
	}
	p, ok := s.seg.ProfileOf(devAppID, "", "ana-7", "")
	if !ok {
		t.Fatal("no profile for user ana-7")
	}
	if c, _ := p.Event("Order Completed"); c.Count != 2 || p.Tags()["plan"].Str != "pro" {
		t.Fatalf("user ana-7: %d orders, plan %q; want the visitor's 2 orders and the user's plan", c.Count, p.Tags()["plan"].Str)
	}
}
