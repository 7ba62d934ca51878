package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nyaruka/phonenumbers"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/heraldhq/herald/analytics"
)

// Consumer groups of the stages, whose lag says whether the pipeline drained.
var stageGroups = []string{"herald-segmenter", "herald-dispatcher", "herald-analytics", analytics.DefaultFactsGroup}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newDevFlags("demo", stderr, false)
	subscribers := f.Int("subscribers", 2000, "WhatsApp subscribers to register (each with tags)")
	events := f.Int("events", 400, "custom events to post (orders, app opens)")
	promo := f.Int("promo", 300, "subscribers who send PROMO")
	help := f.Int("help", 100, "subscribers who send HELP")
	other := f.Int("other", 50, "subscribers who send other text (no keyword)")
	journeyUsers := f.Int("journey-users", 300, "subscribers who go through the welcome journey (push, email, WhatsApp)")
	visitors := f.Int("visitors", 50, "anonymous web visitors a CDP reports (Segment API) who order, then sign in")
	keep := f.Bool("keep", false, "keep the data dir of an earlier demo (default: start clean)")
	timeout := f.Duration("timeout", 3*time.Minute, "give up waiting for the pipeline to drain after this")
	f.logLevel = "warn"
	if err := f.parse(args); err != nil {
		return err
	}
	if *promo+*help+*other > *subscribers {
		return fmt.Errorf("-promo + -help + -other (%d) exceed -subscribers (%d)", *promo+*help+*other, *subscribers)
	}
	log, err := f.logger(stderr)
	if err != nil {
		return err
	}
	if !*keep {
		if err := os.RemoveAll(f.dataDir); err != nil {
			return fmt.Errorf("cleaning demo data dir: %w", err)
		}
	}
	cfg, creds, err := f.stackConfig()
	if err != nil {
		return err
	}
	if creds == nil {
		return fmt.Errorf("demo runs on the generated demo app; drop -apps")
	}
	clock := new(demoClock)
	cfg.Segmenter.Clock = clock.now
	cfg.Segmenter.TickInterval = 20 * time.Millisecond
	cfg.Dispatcher.Email.RatePerSender = 1000 // the local SMTP sink, not a provider's quota
	fmt.Fprintln(stdout, "starting the pipeline: embedded Kafka, private ClickHouse, WhatsApp simulator, every stage...")
	start := time.Now()
	s, err := startStack(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Fprintf(stdout, "  up in %s (ClickHouse %s, ingest %s)\n", time.Since(start).Round(time.Millisecond), s.chVersion(), s.ingestSrv.URL())

	w := &workload{base: s.ingestSrv.URL(), token: creds.APIToken, app: devAppID, rnd: rand.New(rand.NewPCG(1, 2))}
	// The seed's example segment: users whose latest order was Asian food.
	if err := w.post(ctx, "createFilter", map[string]any{"name": demoSegment, "filter_expression": demoSegmentFilter}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "saved segment %s: %s\n", demoSegment, demoSegmentFilter)
	phones := w.phones(*subscribers)
	t0 := time.Now()
	if err := w.register(ctx, phones); err != nil {
		return err
	}
	if err := w.events(ctx, phones, *events); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "registered %d subscribers with tags and posted %d events over the Pushwoosh-style API in %s\n",
		len(phones), *events, time.Since(t0).Round(time.Millisecond))

	if *visitors > 0 {
		t0 = time.Now()
		merged, err := demoVisitors(ctx, s, creds.SegmentWriteKey, *visitors)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "a CDP reported %d anonymous visitors' orders, then their sign-ins (Segment track, identify): %d users now hold their visitor's orders (identity resolution), in %s\n",
			*visitors, merged, time.Since(t0).Round(time.Millisecond))
	}

	// The seed's campaign: the sushi template to the asian_food segment,
	// previewed first.
	campaign := func() map[string]any {
		return map[string]any{
			"name": "sushi-week", "filter": demoSegment,
			"template": "sushi_promo", "content_variables": map[string]string{"1": "{{tag:Name|there}}"},
		}
	}
	pv, err := w.call(ctx, "previewTargetedMessage", campaign())
	if err != nil {
		return err
	}
	byCountry, _ := json.Marshal(pv["by_country"])
	fmt.Fprintf(stdout, "preview of campaign sushi-week: audience %v, sendable %v (opted out %v), outside the service window %v, by country %s; messaging tier %v, headroom %v\n",
		pv["audience"], pv["sendable"], pv["opted_out"], pv["outside_window"], byCountry, pv["tier"], pv["tier_headroom"])
	if cost, ok := pv["estimated_cost"].(map[string]any); ok {
		fmt.Fprintf(stdout, "estimated Meta cost of sushi-week: %v %v (category %s, rate card %v; an estimate, see docs/PRICING.md)\n",
			cost["currency"], cost["total"], pv["category_source"], cost["rate_card"])
	}
	if err := w.post(ctx, "createTargetedMessage", campaign()); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "started campaign sushi-week: template sushi_promo to segment %s\n", demoSegment)

	// Inbound messages come through the simulator: it posts signed webhooks
	// to ingest, as Meta would.
	t0 = time.Now()
	sent, err := w.inbound(ctx, s, phones, map[string]int{"PROMO": *promo, "Help me please": *help, "what are your opening hours?": *other})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d users wrote to the business number (%d PROMO, %d HELP, %d other) through signed webhooks in %s\n",
		sent, *promo, *help, *other, time.Since(t0).Round(time.Millisecond))
	if *journeyUsers > 0 {
		if err := runDemoJourney(ctx, stdout, s, w, clock, phones, *journeyUsers); err != nil {
			return err
		}
	}

	fmt.Fprint(stdout, "waiting for the pipeline to drain (keyword replies are rate limited to 80 msg/s per number, like Meta)...")
	t0 = time.Now()
	if err := s.waitDrained(ctx, *timeout); err != nil {
		fmt.Fprintln(stdout)
		return err
	}
	fmt.Fprintf(stdout, " drained in %s\n\n", time.Since(t0).Round(time.Millisecond))

	sum, err := analytics.Summarize(ctx, s.conn, devAppID, time.Time{})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "report, read back from ClickHouse:")
	if err := sum.WriteText(stdout); err != nil {
		return err
	}
	members, err := segmentMembers(ctx, s, demoSegment)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nsegment %s: %d members (PW_SegmentEntered minus PW_SegmentExited events in ClickHouse)\n", demoSegment, members)
	sushi, outside, err := campaignReach(ctx, s, "sushi_promo", demoSegment)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "campaign sushi-week: sushi_promo sent to %d users, %d of them outside the segment\n", sushi, outside)
	if *journeyUsers > 0 {
		br, err := journeyBranches(ctx, s)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "journey welcome, users per step (PW_JourneyStep events in ClickHouse): push %d -> push opened %d | email %d -> email opened %d | whatsapp %d\n",
			br["push"], br["push_opened"], br["email"], br["email_opened"], br["whatsapp"])
	}
	fmt.Fprintf(stdout, "\nwhole demo: %s. Run `herald dev` to keep it running and try the API yourself.\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// demoVisitors posts, as a CDP would over the Segment API, two orders for
// each of n anonymous visitors, then each one's sign-in (an identify with
// both ids), and counts the users whose profile holds their visitor's two
// orders once all do (or after a minute).
func demoVisitors(ctx context.Context, s *stack, writeKey string, n int) (int, error) {
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(writeKey+":"))
	var batch []map[string]any
	at := time.Now().Add(-time.Hour)
	for i := range n {
		for j := range 2 {
			batch = append(batch, map[string]any{
				"type": "track", "anonymousId": fmt.Sprintf("visitor-%d", i), "messageId": fmt.Sprintf("demo-visit-%d-%d", i, j),
				"event": "OrderPlaced", "properties": map[string]any{"cuisine": "asian"}, "timestamp": at.Add(time.Duration(j) * time.Minute).Format(time.RFC3339),
			})
		}
	}
	post := func(items []map[string]any) error {
		body, _ := json.Marshal(map[string]any{"batch": items})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.ingestSrv.URL()+"/v1/batch", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", basic)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("segment batch: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			return fmt.Errorf("segment batch: HTTP %d: %s", resp.StatusCode, b)
		}
		return nil
	}
	if err := post(batch); err != nil {
		return 0, err
	}
	// The sign-ins need not wait for the orders: a visitor's events that
	// reach its profile after the merge are forwarded to the user.
	batch = batch[:0]
	for i := range n {
		batch = append(batch, map[string]any{
			"type": "identify", "anonymousId": fmt.Sprintf("visitor-%d", i), "userId": fmt.Sprintf("member-%d", i),
			"messageId": fmt.Sprintf("demo-signin-%d", i), "traits": map[string]any{"plan": "free"}, "timestamp": at.Add(10 * time.Minute).Format(time.RFC3339),
		})
	}
	if err := post(batch); err != nil {
		return 0, err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		merged := 0
		for i := range n {
			if p, ok := s.seg.ProfileOf(devAppID, "", fmt.Sprintf("member-%d", i), ""); ok {
				if c, _ := p.Event("OrderPlaced"); c.Count == 2 {
					merged++
				}
			}
		}
		if merged == n || time.Now().After(deadline) {
			return merged, nil
		}
		select {
		case <-ctx.Done():
			return merged, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// The demo's segment: the seed's "users who ordered Asian food" example.
const (
	demoSegment       = "asian_food"
	demoSegmentFilter = `Event("OrderPlaced", "cuisine", EQ, "asian") * T("Registered", EQ, true)`
)

// segmentMembers counts the members of segment from its entry and exit
// events in ClickHouse.
func segmentMembers(ctx context.Context, s *stack, segment string) (int64, error) {
	var n int64
	err := s.conn.QueryRow(ctx, `SELECT toInt64(countIf(name = 'PW_SegmentEntered')) - toInt64(countIf(name = 'PW_SegmentExited'))
		FROM events FINAL WHERE app = ? AND name IN ('PW_SegmentEntered', 'PW_SegmentExited')
		AND arrayElement(attr_values, indexOf(attr_keys, 'segment')) = ?`, devAppID, segment).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting segment members: %w", err)
	}
	return n, nil
}

// campaignReach counts the sends of template and those whose recipient is
// not a member of segment, from ClickHouse.
func campaignReach(ctx context.Context, s *stack, template, segment string) (sends, outside uint64, err error) {
	err = s.conn.QueryRow(ctx, `SELECT count(), countIf(concat('whatsapp:', recipient) NOT IN (
			SELECT hwid FROM events FINAL
			WHERE app = ? AND name IN ('PW_SegmentEntered', 'PW_SegmentExited') AND arrayElement(attr_values, indexOf(attr_keys, 'segment')) = ?
			GROUP BY hwid HAVING countIf(name = 'PW_SegmentEntered') > countIf(name = 'PW_SegmentExited')))
		FROM messages FINAL WHERE app = ? AND template = ?`, devAppID, segment, devAppID, template).Scan(&sends, &outside)
	if err != nil {
		return 0, 0, fmt.Errorf("counting the campaign's sends: %w", err)
	}
	return sends, outside, nil
}

func (s *stack) chVersion() string {
	var v string
	if err := s.conn.QueryRow(context.Background(), "SELECT version()").Scan(&v); err != nil {
		return "?"
	}
	return v
}

// waitDrained waits until every stage's consumer group has no lag and the
// simulator has no webhook left to send, steadily for a second and a half
// (status webhooks make new events after a send).
func (s *stack) waitDrained(ctx context.Context, timeout time.Duration) error {
	adm := kadm.NewClient(s.admin)
	deadline := time.Now().Add(timeout)
	quiet := 0
	for quiet < 4 {
		if err := s.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pipeline not drained after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		lag, err := totalLag(ctx, adm, stageGroups...)
		if err != nil || lag > 0 || s.sim.Stats().Pending > 0 {
			quiet = 0
			continue
		}
		quiet++
	}
	return nil
}

// totalLag sums the lag of groups over all their partitions. A group that
// has not committed yet counts its whole topic as lag.
func totalLag(ctx context.Context, adm *kadm.Client, groups ...string) (int64, error) {
	lags, err := adm.Lag(ctx, groups...)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, g := range groups {
		l, ok := lags[g]
		if !ok || l.Error() != nil {
			return 0, fmt.Errorf("group %s: lag unknown", g)
		}
		total += l.Lag.Total()
	}
	return total, nil
}

// workload drives ingest over HTTP like an app backend would.
type workload struct {
	base, token, app string
	rnd              *rand.Rand
}

var (
	cities   = []string{"Mumbai", "Delhi", "São Paulo", "Jakarta", "Lagos", "Mexico City", "Berlin", "London", "New York"}
	cuisines = []string{"asian", "italian", "indian", "mexican", "burgers", "vegan"}
	names    = []string{"Asha", "Ravi", "Lucas", "Ana", "Budi", "Siti", "Chidi", "Ngozi", "Sofía", "Diego", "Lena", "Jonas", "Amelia", "Oliver", "Maya"}
)

// phoneFormats are mobile-number patterns per country ("#" is a random digit).
var phoneFormats = []string{"+9198########", "+55119########", "+62812########", "+234803#######", "+52155########", "+49151########", "+447911######", "+1212555####"}

// phones generates n distinct valid mobile numbers (libphonenumber-checked).
func (w *workload) phones(n int) []string {
	seen := make(map[string]bool, n)
	out := make([]string, 0, n)
	for len(out) < n {
		f := phoneFormats[w.rnd.IntN(len(phoneFormats))]
		b := []byte(f)
		for i := range b {
			if b[i] == '#' {
				b[i] = byte('0' + w.rnd.IntN(10))
			}
		}
		p := string(b)
		if seen[p] || p[len(p)-4:] == "0000" {
			continue
		}
		num, err := phonenumbers.Parse(p, "")
		if err != nil || !phonenumbers.IsValidNumber(num) {
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	return out
}

func (w *workload) post(ctx context.Context, method string, req map[string]any) error {
	_, err := w.call(ctx, method, req)
	return err
}

// call posts a Pushwoosh-style call and returns its "response" object.
func (w *workload) call(ctx context.Context, method string, req map[string]any) (map[string]any, error) {
	req["application"] = w.app
	body, _ := json.Marshal(map[string]any{"request": req})
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, w.base+"/json/1.3/"+method, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Authorization", "Token "+w.token)
	hr.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d: %s", method, resp.StatusCode, rb)
	}
	var env struct {
		Response map[string]any `json:"response"`
	}
	if err := json.Unmarshal(rb, &env); err != nil {
		return nil, fmt.Errorf("%s: answer %q: %w", method, rb, err)
	}
	return env.Response, nil
}

// parallel runs fn for 0..n-1 on 16 workers and returns the first error.
func parallel(ctx context.Context, n int, fn func(i int) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

func (w *workload) register(ctx context.Context, phones []string) error {
	return parallel(ctx, len(phones), func(i int) error {
		r := rand.New(rand.NewPCG(uint64(i), 7))
		tags := map[string]any{
			"Name":            names[r.IntN(len(names))],
			"City":            cities[r.IntN(len(cities))],
			"FavoriteCuisine": cuisines[r.IntN(len(cuisines))],
			"Orders":          r.IntN(20),
			"VIP":             r.IntN(10) == 0,
		}
		if err := w.post(ctx, "registerDevice", map[string]any{
			"device_type": 21, "hwid": "whatsapp:" + phones[i], "userId": "user-" + strconv.Itoa(i),
			"language": "en", "timezone": "UTC", "tags": tags,
		}); err != nil {
			return err
		}
		if i%3 == 0 {
			return w.post(ctx, "setTags", map[string]any{
				"hwid": "whatsapp:" + phones[i],
				"tags": map[string]any{"LastOrderCuisine": cuisines[r.IntN(len(cuisines))], "Interests": []string{"deals", "new-menu"}},
			})
		}
		return nil
	})
}

func (w *workload) events(ctx context.Context, phones []string, n int) error {
	return parallel(ctx, n, func(i int) error {
		r := rand.New(rand.NewPCG(uint64(i), 11))
		p := phones[r.IntN(len(phones))]
		ev, attrs := "PW_ApplicationOpen", map[string]any{}
		if i%2 == 0 {
			ev, attrs = "OrderPlaced", map[string]any{"cuisine": cuisines[r.IntN(len(cuisines))], "amount": 5 + r.IntN(60), "currency": "USD"}
		}
		return w.post(ctx, "postEvent", map[string]any{
			"hwid": "whatsapp:" + p, "event": ev, "attributes": attrs,
			"timestampUTC": time.Now().Add(-time.Duration(r.IntN(3600)) * time.Second).Unix(),
		})
	})
}

// inbound has distinct subscribers send each text, count times each, and
// returns how many messages were sent.
func (w *workload) inbound(ctx context.Context, s *stack, phones []string, texts map[string]int) (int, error) {
	type msg struct{ from, text string }
	var msgs []msg
	i := 0
	for _, text := range []string{"PROMO", "Help me please", "what are your opening hours?"} {
		for range texts[text] {
			msgs = append(msgs, msg{phones[i], text})
			i++
		}
	}
	err := parallel(ctx, len(msgs), func(i int) error {
		_, err := s.sim.SendInbound(ctx, devPhoneNumberID, msgs[i].from, msgs[i].text)
		return err
	})
	return len(msgs), err
}
