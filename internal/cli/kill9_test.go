package cli

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// TestSegmenterKill9 runs the broker and the segmenter as processes of the
// built binary, gives the segmenter a backlog of tag increments, kills it
// (SIGKILL) while it works through them with its changelog coalesced, and
// starts it again. In the end every user's tags record counts each of its
// increments exactly once: none lost with the pending changes the kill
// took, none applied twice from the events replayed after it.
func TestSegmenterKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs the broker and the segmenter as processes")
	}
	bin := buildHerald(t)
	dir := t.TempDir()
	brokerAddr, opsAddr := freeAddr(t), freeAddr(t)
	_, brokerPort, _ := net.SplitHostPort(brokerAddr)
	broker := &proc{
		t: t, name: "broker", bin: bin, log: filepath.Join(dir, "broker.log"), ready: tcpReady(brokerAddr),
		args: []string{"-port", brokerPort, "-data-dir", filepath.Join(dir, "broker"), "-kafka.partitions", "4"},
	}
	seg := &proc{
		t: t, name: "segmenter", bin: bin, log: filepath.Join(dir, "segmenter.log"), ready: httpReady("http://" + opsAddr + "/readyz"),
		args: []string{
			"-kafka.brokers", brokerAddr, "-ops.addr", opsAddr, "-segmenter.cache-lazy",
			// Written (and committed) every 1.5 s while behind, longer
			// than the client's 1 s auto-commit: were events committed
			// before their changelog is written, the kill after the
			// first commit would lose some. One worker: the backlog
			// lasts past the first write.
			"-segmenter.changelog-interval", "1500ms", "-segmenter.workers", "1",
			// The restarted member gets the partitions back once the
			// group gave up on the killed one.
			"-kafka.session-timeout", "6s",
		},
	}
	for _, p := range []*proc{broker, seg} {
		t.Cleanup(p.kill)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- segmenter.log (tail)\n%s", tail(seg.log, 40))
		}
	})
	broker.start()

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokerAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	const users, increments = 6000, 200
	hwid := func(u int) string { return fmt.Sprintf("whatsapp:+1415777%04d", u) }
	now := time.Now().UTC().Add(-time.Hour)
	recs := make([]*kgo.Record, 0, users)
	for i := range increments {
		recs = recs[:0]
		for u := range users {
			e := &schemas.Event{
				ID: fmt.Sprintf("inc-%d-%d", u, i), App: "ABCDE-12345", Kind: schemas.KindTags, Time: now,
				HWID: hwid(u), Tags: map[string]any{"Visits": 1.0}, TagOps: map[string]string{"Visits": schemas.OpIncrement},
			}
			b, err := e.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, &kgo.Record{Topic: schemas.TopicEvents, Key: e.Key(), Value: b})
		}
		if err := cl.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
			t.Fatalf("producing the backlog: %v", err)
		}
	}
	const total = int64(users * increments)
	committed := func() int64 {
		offs, err := adm.FetchOffsets(t.Context(), "herald-segmenter")
		if err != nil {
			return 0
		}
		var n int64
		offs.Each(func(o kadm.OffsetResponse) {
			if o.Topic == schemas.TopicEvents {
				n += o.At
			}
		})
		return n
	}

	seg.start()
	var atKill int64
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(5 * time.Millisecond) {
		if n := committed(); n > 0 {
			atKill = n
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the segmenter committed nothing")
		}
	}
	seg.kill()
	if atKill >= total {
		t.Fatalf("the segmenter had committed all %d events before the kill: no backlog left to lose", total)
	}
	t.Logf("killed with %d of %d events committed", atKill, total)

	seg.start()
	for deadline := time.Now().Add(2 * time.Minute); committed() < total; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events committed after the restart", committed(), total)
		}
	}
	seg.stop()

	// The latest tags record of each user: its partition's last one.
	n, err := topicRecords(t.Context(), adm, schemas.TopicTags)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := kgo.NewClient(kgo.SeedBrokers(brokerAddr), kgo.ConsumeTopics(schemas.TopicTags), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	latest := map[string]float64{}
	for read := int64(0); read < n; {
		fs := rd.PollFetches(t.Context())
		if err := fs.Err0(); err != nil {
			t.Fatalf("reading %s: %v", schemas.TopicTags, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			read++
			var pt schemas.ProfileTags
			if err := json.Unmarshal(r.Value, &pt); err != nil {
				t.Fatalf("tags record %s: %v", r.Key, err)
			}
			v, _ := pt.Tags["Visits"].(float64)
			latest[pt.HWID] = v
		})
	}
	if len(latest) != users {
		t.Fatalf("tags records of %d users, want %d", len(latest), users)
	}
	for u := range users {
		if got := latest[hwid(u)]; got != increments {
			t.Fatalf("user %d: Visits %v, want %d (each increment once)", u, got, increments)
		}
	}
}
