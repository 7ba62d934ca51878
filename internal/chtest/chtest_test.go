package chtest

import (
	"context"
	"testing"
)

func TestMain(m *testing.M) { Main(m) }

func TestDBIsolated(t *testing.T) {
	_, a := DB(t)
	_, b := DB(t)
	ctx := context.Background()
	if err := a.Exec(ctx, "CREATE TABLE x (n UInt8) ENGINE = MergeTree ORDER BY n"); err != nil {
		t.Fatal(err)
	}
	// ClickHouse 18.16 waits for a data block after INSERT ... VALUES sent
	// through Exec; inserts always go through batches.
	batch, err := a.PrepareBatch(ctx, "INSERT INTO x (n)")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []uint8{1, 2} {
		if err := batch.Append(n); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
	if got := Count(t, a, "SELECT count() FROM x"); got != 2 {
		t.Fatalf("count = %d, want 2", got)
	}
	if err := b.Exec(ctx, "SELECT count() FROM x"); err == nil {
		t.Fatal("second database sees the first one's table")
	}
}
