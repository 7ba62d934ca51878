package broker

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestDataDirSurvivesRestart: what was produced and committed before a
// restart is there after it, with the same data dir.
func TestDataDirSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	b, err := Start(Config{DataDir: dir, Partitions: 2, Topics: []string{"t"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"a", "b", "c"} {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "t", Key: []byte("k"), Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// A group consumes one record and commits it.
	g, err := kgo.NewClient(kgo.SeedBrokers(b.Addrs()...), kgo.ConsumerGroup("g"), kgo.ConsumeTopics("t"),
		kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	var first *kgo.Record
	for first == nil {
		fs := g.PollRecords(ctx, 1)
		if ctx.Err() != nil {
			t.Fatal("no record before the deadline")
		}
		if recs := fs.Records(); len(recs) > 0 {
			first = recs[0]
		}
	}
	if err := g.CommitRecords(ctx, first); err != nil {
		t.Fatal(err)
	}
	g.Close()
	cl.Close()
	b.Close()

	b2, err := Start(Config{DataDir: dir, Partitions: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	g2, err := kgo.NewClient(kgo.SeedBrokers(b2.Addrs()...), kgo.ConsumerGroup("g"), kgo.ConsumeTopics("t"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Close()
	var got []string
	for len(got) < 2 {
		fs := g2.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		for _, r := range fs.Records() {
			got = append(got, string(r.Value))
		}
	}
	if len(got) != 2 || got[0] != "b" || got[1] != "c" {
		t.Fatalf("after restart the group read %v, want [b c] (a was committed before)", got)
	}
}

func TestListensOnGivenPort(t *testing.T) {
	b, err := Start(Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if len(b.Addrs()) != 1 || b.Addrs()[0][:10] != "127.0.0.1:" {
		t.Fatalf("addrs %v", b.Addrs())
	}
}
