package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/quotedprintable"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// The demo's journey: the seed's omnichannel flow. A push; if it is not
// opened within an hour, an email; if that is not opened within a day, a
// WhatsApp template. A user who opens the push gets nothing more.
//
// The demo moves the journeys' clock (segmenter.Config.Clock) forward by
// the hour and the day at once, so the journey runs in seconds; everything
// else (Kafka, the segmenter's timers and ticks, the dispatcher, the SMTP
// server and the push simulator, ClickHouse) runs as it would.

// demoJourney is the journey's definition, as createJourney takes it.
var demoJourney = map[string]any{
	"id": "welcome", "name": "Welcome: push, then email, then WhatsApp",
	"entry": map[string]any{"api": true},
	"goal":  map[string]any{"event": "OrderPlaced"},
	"steps": []map[string]any{
		{"id": "push", "type": "send", "channel": "push", "push": map[string]any{"title": "Welcome, {{tag:Name|friend}}!", "body": "Your first order ships free"}, "next": "wait_push"},
		{"id": "wait_push", "type": "wait_event", "event": "PW_PushOpened", "match_send": true, "timeout": "1h", "on_event": "push_opened", "on_timeout": "email"},
		{"id": "email", "type": "send", "channel": "email", "email": map[string]any{
			"subject": "Welcome to Herald Foods",
			"text":    "Hi {{tag:Name|there}}, your first order ships free.", "html": `<p>Hi {{tag:Name|there}}, your <a href="https://foods.example.com/menu">first order</a> ships free.</p>`,
		}, "next": "wait_email"},
		{"id": "wait_email", "type": "wait_event", "event": "PW_EmailOpened", "match_send": true, "timeout": "24h", "on_event": "email_opened", "on_timeout": "whatsapp"},
		{"id": "whatsapp", "type": "send", "channel": "whatsapp", "template": map[string]any{"name": "welcome_back", "language": "en_US"}, "next": "done"},
		{"id": "push_opened", "type": "exit"},
		{"id": "email_opened", "type": "exit"},
		{"id": "done", "type": "exit"},
	},
}

// demoClock is the journeys' clock of the demo: real time plus an offset
// the demo moves forward.
type demoClock struct{ offset atomic.Int64 }

func (c *demoClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *demoClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

var pixelRE = regexp.MustCompile(`/t/o/[A-Za-z0-9_=.-]+\.gif`)

// runDemoJourney runs the journey for the first n phones: every third opens
// the push, every other of the rest opens the email. It prints what
// happened and checks that nobody who opened the push got anything more.
func runDemoJourney(ctx context.Context, stdout io.Writer, s *stack, w *workload, clock *demoClock, phones []string, n int) error {
	if n > len(phones) {
		n = len(phones)
	}
	phones = phones[:n]
	t0 := time.Now()
	// The same subscribers with their email and the app's push token.
	if err := parallel(ctx, n, func(i int) error {
		return w.post(ctx, "registerDevice", map[string]any{
			"device_type": 21, "hwid": "whatsapp:" + phones[i],
			"email": fmt.Sprintf("user%d@demo.example", i), "push_token": fmt.Sprintf("demo-fcm-%d", i),
		})
	}); err != nil {
		return err
	}
	if err := w.post(ctx, "createJourney", map[string]any{"journey": demoJourney}); err != nil {
		return err
	}
	if err := s.waitSegmenter(ctx); err != nil { // the addresses are on the profiles
		return err
	}
	var devices []string
	for _, p := range phones {
		devices = append(devices, "whatsapp:"+p)
	}
	if err := w.post(ctx, "startJourney", map[string]any{"id": "welcome", "devices": devices}); err != nil {
		return err
	}
	// Pushes reach the simulator; a third of the users open theirs (the
	// app posts PW_PushOpened with the notification's dispatch id).
	pushes, err := waitCount(ctx, "pushes", n, func() int { return len(s.sims.fcm.Messages()) })
	if err != nil {
		return err
	}
	opened := map[string]bool{}
	var mu sync.Mutex
	msgs := s.sims.fcm.Messages()
	if err := parallel(ctx, len(msgs), func(i int) error {
		m := msgs[i]
		k, err := strconv.Atoi(strings.TrimPrefix(m.Token, "demo-fcm-"))
		if err != nil || k%3 != 0 {
			return nil
		}
		mu.Lock()
		opened[phones[k]] = true
		mu.Unlock()
		return w.post(ctx, "postEvent", map[string]any{
			"hwid": "whatsapp:" + phones[k], "event": "PW_PushOpened",
			"attributes": map[string]any{"dispatch_id": m.Data["herald_dispatch_id"]},
		})
	}); err != nil {
		return err
	}
	if err := s.waitSegmenter(ctx); err != nil {
		return err
	}
	// An hour later: emails to who did not open the push.
	clock.advance(61 * time.Minute)
	emails, err := waitCount(ctx, "emails", n-len(opened), func() int { return len(s.sims.smtp.Messages()) })
	if err != nil {
		return err
	}
	emailedOpeners := 0
	var pixels []string
	for i, m := range s.sims.smtp.Messages() {
		for _, to := range m.To {
			if opened[phoneOfEmail(phones, to)] {
				emailedOpeners++
			}
		}
		if i%2 == 0 { // every other recipient opens the email: the pixel loads
			body, _ := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(m.Data)))
			if p := pixelRE.Find(body); p != nil {
				pixels = append(pixels, string(p))
			}
		}
	}
	if err := parallel(ctx, len(pixels), func(i int) error {
		resp, err := http.Get(w.base + pixels[i])
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("open pixel: HTTP %d", resp.StatusCode)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := s.waitSegmenter(ctx); err != nil {
		return err
	}
	// A day later: WhatsApp to who opened neither.
	waBefore := s.sim.Stats().Accepted
	clock.advance(25 * time.Hour)
	whatsapps, err := waitCount(ctx, "WhatsApp messages", emails-len(pixels), func() int { return int(s.sim.Stats().Accepted - waBefore) })
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "journey welcome (push -> 1h -> email -> 24h -> WhatsApp) for %d users, journey clock moved 1h and 24h: %d pushes, %d opened;"+
		" %d emails (%d to users who opened the push), %d opened; %d WhatsApp templates; in %s\n",
		n, pushes, len(opened), emails, emailedOpeners, len(pixels), whatsapps, time.Since(t0).Round(time.Millisecond))
	if emailedOpeners > 0 {
		return fmt.Errorf("journey: %d users who opened the push got an email", emailedOpeners)
	}
	return nil
}

// phoneOfEmail is the phone of the demo user with email to.
func phoneOfEmail(phones []string, to string) string {
	k, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(strings.Trim(to, "<>"), "user"), "@demo.example"))
	if err != nil || k < 0 || k >= len(phones) {
		return ""
	}
	return phones[k]
}

// waitCount waits until count() reaches want (or stays below it for 30 s).
func waitCount(ctx context.Context, what string, want int, count func() int) (int, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := count()
		if n >= want {
			return n, nil
		}
		if time.Now().After(deadline) {
			return n, fmt.Errorf("journey: %d %s after 30s, want %d", n, what, want)
		}
		select {
		case <-ctx.Done():
			return n, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitSegmenter waits until the segmenter committed every event.
func (s *stack) waitSegmenter(ctx context.Context) error {
	adm := kadm.NewClient(s.admin)
	for deadline := time.Now().Add(30 * time.Second); ; {
		lag, err := totalLag(ctx, adm, stageGroups[0])
		if err == nil && lag == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the segmenter did not catch up within 30s (lag %d, %v)", lag, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// journeyBranches counts, from ClickHouse, the users who reached each step
// of the demo journey (PW_JourneyStep events).
func journeyBranches(ctx context.Context, s *stack) (map[string]uint64, error) {
	rows, err := s.conn.Query(ctx, `SELECT arrayElement(attr_values, indexOf(attr_keys, 'step')) AS step, count()
		FROM events FINAL WHERE app = ? AND name = 'PW_JourneyStep' AND arrayElement(attr_values, indexOf(attr_keys, 'journey')) = 'welcome'
		GROUP BY step`, devAppID)
	if err != nil {
		return nil, fmt.Errorf("counting journey steps: %w", err)
	}
	defer rows.Close()
	out := map[string]uint64{}
	for rows.Next() {
		var step string
		var n uint64
		if err := rows.Scan(&step, &n); err != nil {
			return nil, err
		}
		out[step] = n
	}
	return out, rows.Err()
}
