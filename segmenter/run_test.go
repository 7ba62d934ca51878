package segmenter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

// runSegmenter starts a Segmenter on c with a fixed clock and returns it and
// the channel Run's result arrives on.
func runSegmenter(t *testing.T, c *kafkatest.Cluster, now time.Time) (*Segmenter, context.CancelFunc, <-chan error) {
	t.Helper()
	return runSegmenterConfig(t, c, Config{}, now)
}

// runSegmenterConfig is runSegmenter with cfg.
func runSegmenterConfig(t *testing.T, c *kafkatest.Cluster, cfg Config, now time.Time) (*Segmenter, context.CancelFunc, <-chan error) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := New(cfg, c.Config, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return now }
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		errc <- s.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
		s.Close()
	})
	return s, cancel, errc
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func produce(t *testing.T, c *kafkatest.Cluster, recs ...*kgo.Record) {
	t.Helper()
	if err := c.Client(t).ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatalf("producing events: %v", err)
	}
}

// committed returns the group's committed offsets on TopicEvents by
// partition (absent: nothing committed).
func committed(t *testing.T, adm *kadm.Client) map[int32]int64 {
	t.Helper()
	resps, err := adm.FetchOffsets(t.Context(), DefaultGroup)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return map[int32]int64{} // the group has not committed yet
	}
	if err != nil {
		t.Fatalf("fetching offsets: %v", err)
	}
	out := map[int32]int64{}
	resps.Each(func(r kadm.OffsetResponse) {
		if r.Topic == schemas.TopicEvents && r.Err == nil && r.At >= 0 {
			out[r.Partition] = r.At
		}
	})
	return out
}

// endOffsets returns the end offset of every partition of topic.
func endOffsets(t *testing.T, adm *kadm.Client, topic string) map[int32]int64 {
	t.Helper()
	l, err := adm.ListEndOffsets(t.Context(), topic)
	if err != nil {
		t.Fatalf("listing end offsets: %v", err)
	}
	out := map[int32]int64{}
	l.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

// waitCommitted polls until the group committed every record of
// TopicEvents.
func waitCommitted(t *testing.T, adm *kadm.Client) {
	t.Helper()
	want := endOffsets(t, adm, schemas.TopicEvents)
	for k, v := range want {
		if v == 0 {
			delete(want, k)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := committed(t, adm)
		if reflect.DeepEqual(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("committed offsets %v, want %v", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func sum(m map[int32]int64) (n int64) {
	for _, v := range m {
		n += v
	}
	return n
}

func TestRunCommitsAfterOutputs(t *testing.T) {
	c := kafkatest.New(t, 2)
	adm := kadm.NewClient(c.Client(t))
	now := time.Now().UTC().Truncate(time.Microsecond)
	at := now.Add(-time.Minute)

	// Three users write PROMO, one of them also HELP; "thanks" matches no
	// keyword; one record is garbage.
	var recs []*kgo.Record
	var want []*schemas.DispatchRequest
	for i := 1; i <= 3; i++ {
		phone := fmt.Sprintf("+1415555000%d", i)
		hwid := "whatsapp:" + phone
		name := fmt.Sprintf("User %d", i)
		reg := register(fmt.Sprintf("reg-%d", i), at, nil)
		reg.HWID = hwid
		promo := inbound(fmt.Sprintf("promo-%d", i), testApp, "Promo!", name, at)
		promo.HWID, promo.Inbound.From = hwid, phone
		thanks := inbound(fmt.Sprintf("thanks-%d", i), testApp, "thanks", name, at)
		thanks.HWID, thanks.Inbound.From = hwid, phone
		recs = append(recs, record(t, reg), record(t, promo), record(t, thanks))
		want = append(want, &schemas.DispatchRequest{
			V: schemas.V1, ID: wantID(promo.ID, "PROMO"), App: testApp, Channel: schemas.ChannelWhatsApp,
			Sender: testPNID, To: phone, HWID: hwid, Country: "US",
			Template: &schemas.Template{Name: "promo_offer", Language: "en_US", Category: "MARKETING", Body: []string{name}},
			Source:   schemas.Source{Kind: "keyword", Name: "PROMO", EventID: promo.ID},
			Created:  now, Deadline: now.Add(24 * time.Hour), WindowUntil: at.Add(24 * time.Hour),
		})
		if i == 1 {
			help := inbound("help-1", testApp, "help", name, at)
			help.HWID, help.Inbound.From = hwid, phone
			recs = append(recs, record(t, help))
			want = append(want, &schemas.DispatchRequest{
				V: schemas.V1, ID: wantID(help.ID, "HELP"), App: testApp, Channel: schemas.ChannelWhatsApp,
				Sender: testPNID, To: phone, HWID: hwid, Country: "US",
				Text:    &schemas.Text{Body: DefaultKeywords()[1].Text},
				Source:  schemas.Source{Kind: "keyword", Name: "HELP", EventID: help.ID},
				Created: now, Deadline: at.Add(24 * time.Hour), // the service window closes first
				WindowUntil: at.Add(24 * time.Hour),
			})
		}
	}
	recs = append(recs, &kgo.Record{Topic: schemas.TopicEvents, Key: []byte("bad"), Value: []byte("{not json")})
	produce(t, c, recs...)

	// From here on, every produce request is the segmenter's output: hold
	// them until the test has checked that nothing was committed.
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	blocked := make(chan struct{}, 1)
	c.Cluster.ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.Cluster.KeepControl()
		select {
		case blocked <- struct{}{}:
		default:
		}
		c.Cluster.SleepControl(func() { <-release })
		return nil, nil, false // then handle it normally
	})

	s, cancel, errc := runSegmenter(t, c, now)
	select {
	case <-blocked:
	case err := <-errc:
		t.Fatalf("Run returned early: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("the segmenter produced nothing")
	}
	// Outputs are in flight, not acknowledged: wait past the auto-commit
	// interval (1 s) and check that no offset was committed.
	time.Sleep(1500 * time.Millisecond)
	if got := committed(t, adm); len(got) != 0 {
		t.Fatalf("offsets %v committed before the outputs were acknowledged", got)
	}
	unblock()

	got := c.ReadAll(t, schemas.TopicDispatch, len(want))
	waitCommitted(t, adm)
	if n := sum(endOffsets(t, adm, schemas.TopicDispatch)); n != int64(len(want)) {
		t.Fatalf("%d dispatch requests on the topic, want %d", n, len(want))
	}
	ds, _ := decodeOutputs(t, got)
	byID := func(a, b *schemas.DispatchRequest) int { return strings.Compare(a.ID, b.ID) }
	slices.SortFunc(ds, byID)
	slices.SortFunc(want, byID)
	if !reflect.DeepEqual(ds, want) {
		t.Fatalf("dispatch requests\n got %s\nwant %s", dump(ds), dump(want))
	}
	dls := c.ReadAll(t, schemas.TopicDeadLetter, 1)
	if _, dl := decodeOutputs(t, dls); len(dl) != 1 || string(dl[0].Value) != "{not json" || !strings.Contains(dl[0].Reason, "decoding event") {
		t.Fatalf("dead letters %+v", dl)
	}
	if p, ok := s.Profile(testApp, "whatsapp:+14155550001"); !ok || !p.Registered || p.Tags()[TagProfileName].Str != "User 1" {
		t.Errorf("profile of user 1: %+v", p)
	}

	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestRunProduceFailureIsNotCommitted(t *testing.T) {
	c := kafkatest.New(t, 1)
	adm := kadm.NewClient(c.Client(t))
	now := time.Now().UTC().Truncate(time.Microsecond)
	ev := inbound("promo-1", testApp, "PROMO", "Ana", now.Add(-time.Minute))
	produce(t, c, record(t, ev))

	// The broker refuses the segmenter's produce requests with a permanent
	// error while fail is set.
	var fail atomic.Bool
	fail.Store(true)
	c.Cluster.ControlKey(kmsg.Produce.Int16(), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		if !fail.Load() {
			c.Cluster.DropControl()
			return nil, nil, false
		}
		c.Cluster.KeepControl()
		req := kr.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		resp.SetVersion(req.GetVersion())
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.InvalidRecord.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})

	first, _, errc := runSegmenter(t, c, now)
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "producing") {
			t.Fatalf("Run returned %v, want a produce error", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not stop on a permanent produce error")
	}
	first.Close() // leaves the group
	if got := committed(t, adm); len(got) != 0 {
		t.Fatalf("offsets %v committed after a failed batch", got)
	}

	// A new segmenter gets the batch again and delivers it.
	fail.Store(false)
	runSegmenter(t, c, now)
	got := c.ReadAll(t, schemas.TopicDispatch, 1)
	ds, _ := decodeOutputs(t, got)
	if len(ds) != 1 || ds[0].ID != wantID(ev.ID, "PROMO") {
		t.Fatalf("after restart: %s", dump(ds))
	}
	waitCommitted(t, adm)
}

// TestRunChangelogAfterOutputs: with the dispatch and changelog partitions
// on different brokers, a batch's changelog record is not produced while
// its dispatch request is unacknowledged (a crash then would have the
// restored profile count the event as applied and its reply never sent),
// and both land once the dispatch broker answers.
func TestRunChangelogAfterOutputs(t *testing.T) {
	kc, err := kfake.NewCluster(kfake.NumBrokers(2), kfake.SeedTopics(1, schemas.Topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	cfg := kafka.Config{Brokers: kc.ListenAddrs(), Partitions: 1}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	c := &kafkatest.Cluster{Config: cfg, Cluster: kc}
	dispatchNode := kc.LeaderFor(schemas.TopicDispatch, 0)
	if kc.LeaderFor(schemas.TopicProfiles, 0) == dispatchNode {
		if err := kc.MoveTopicPartition(schemas.TopicProfiles, 0, 1-dispatchNode); err != nil {
			t.Fatal(err)
		}
	}
	if kc.LeaderFor(schemas.TopicProfiles, 0) == dispatchNode {
		t.Fatal("the changelog and dispatch partitions have the same leader")
	}
	adm := kadm.NewClient(c.Client(t))
	now := time.Now().UTC().Truncate(time.Microsecond)
	ev := inbound("promo-1", testApp, "PROMO", "Ana", now.Add(-time.Minute))
	produce(t, c, record(t, ev))

	// From here on, the dispatch partition's broker holds every produce
	// request until release (newer produce requests name topics by id, so
	// the broker, not the topic, is what is matched).
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	blocked := make(chan struct{}, 1)
	kc.ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		if kc.CurrentNode() != dispatchNode {
			return nil, nil, false
		}
		select {
		case blocked <- struct{}{}:
		default:
		}
		kc.SleepControl(func() { <-release })
		return nil, nil, false
	})

	_, _, errc := runSegmenter(t, c, now)
	t.Cleanup(unblock) // before the segmenter's cleanup, which waits for its produce requests
	select {
	case <-blocked:
	case err := <-errc:
		t.Fatalf("Run returned early: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("the segmenter produced no dispatch request")
	}
	// The changelog broker answers at once: had the changelog record
	// been produced with the dispatch request, it would be there by now.
	time.Sleep(500 * time.Millisecond)
	if n := sum(endOffsets(t, adm, schemas.TopicProfiles)); n != 0 {
		t.Fatalf("%d changelog records produced before the dispatch request was acknowledged", n)
	}
	unblock()

	got := c.ReadAll(t, schemas.TopicDispatch, 1)
	if ds, _ := decodeOutputs(t, got); len(ds) != 1 || ds[0].ID != wantID(ev.ID, "PROMO") {
		t.Fatalf("dispatch requests: %s", dump(ds))
	}
	if cl := c.ReadAll(t, schemas.TopicProfiles, 1); len(cl) != 1 {
		t.Fatalf("%d changelog records after the release, want 1", len(cl))
	}
	waitCommitted(t, adm)
}
