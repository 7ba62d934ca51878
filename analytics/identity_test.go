package analytics

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// TestAnonymousAndMergeEvents: an event of a user known only by a CDP's
// anonymous id keeps that id (anonymous_id), and an identity-resolution
// step is stored with its step and profile ids as attributes, not the
// profile it carries.
func TestAnonymousAndMergeEvents(t *testing.T) {
	_, conn := migratedDB(t)
	s, _, _ := newSink(t, Config{}, conn)
	o := offsets{}
	anon := &schemas.Event{ID: "a-1", App: "demo", Kind: schemas.KindEvent, Name: "Order Completed", Time: base, Received: base, AnonymousID: "visitor-1"}
	merge := &schemas.Event{
		ID: "m-1", App: "demo", Kind: schemas.KindMerge, Time: base, Received: base,
		Merge: &schemas.Merge{Step: schemas.MergeDone, From: "demo|anon:visitor-1", Into: "demo|user:ana-7", Profile: []byte("opaque")},
	}
	dls, err := s.Write(t.Context(), []*kgo.Record{o.rec(t, schemas.TopicEvents, anon.Key(), anon), o.rec(t, schemas.TopicEvents, merge.Key(), merge)})
	if err != nil || len(dls) != 0 {
		t.Fatalf("Write: %v, %d dead letters", err, len(dls))
	}
	if n := count(t, conn, "SELECT count() FROM events WHERE anonymous_id = 'visitor-1' AND user_id = '' AND hwid = ''"); n != 1 {
		t.Errorf("%d events of anonymous_id visitor-1, want 1", n)
	}
	q := `SELECT count() FROM events WHERE kind = 'merge'
		AND arrayElement(attr_values, indexOf(attr_keys, 'step')) = 'done'
		AND arrayElement(attr_values, indexOf(attr_keys, 'from')) = 'anon:visitor-1'
		AND arrayElement(attr_values, indexOf(attr_keys, 'into')) = 'user:ana-7'
		AND position(attributes, 'opaque') = 0 AND position(attributes, 'profile') = 0`
	if n := count(t, conn, q); n != 1 {
		t.Errorf("%d merge rows with step, from and into and without the profile, want 1", n)
	}
	// The query of docs/ANALYTICS.md ("which anonymous ids became which user").
	var earlier, user string
	err = conn.QueryRow(t.Context(), `SELECT arrayElement(attr_values, indexOf(attr_keys, 'from')) AS earlier,
       arrayElement(attr_values, indexOf(attr_keys, 'into')) AS user, min(time) AS merged
FROM events FINAL
WHERE app = 'demo' AND kind = 'merge' AND arrayElement(attr_values, indexOf(attr_keys, 'step')) = 'done'
GROUP BY earlier, user`).Scan(&earlier, &user, new(time.Time))
	if err != nil || earlier != "anon:visitor-1" || user != "user:ana-7" {
		t.Errorf("merges query: %q -> %q, %v; want anon:visitor-1 -> user:ana-7", earlier, user, err)
	}
}
