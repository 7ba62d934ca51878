package analytics

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ClickHouse/ch-go/proto"
	chcol "github.com/ClickHouse/clickhouse-go/v2/lib/column"
)

// TestReserveSameAsAppend: a String column reserved before its values are
// appended holds, and sends, the same as one they are only appended to,
// whatever the sizes (over zeros too), and reserve leaves columns it
// does not size alone.
func TestReserveSameAsAppend(t *testing.T) {
	_, conn := migratedDB(t)
	newColumn := func(i int) chcol.Interface {
		b, err := conn.PrepareBatch(t.Context(), eventsTable.insertQuery())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Abort() })
		return b.Columns()[i]
	}
	encoded := func(c chcol.Interface) []byte {
		var buf proto.Buffer
		c.Encode(&buf)
		return buf.Buf
	}
	values := func(n int, long int) []string {
		vs := make([]string, n)
		for i := range vs {
			switch i % 4 {
			case 0: // empty
			case 1:
				vs[i] = "in-" + strings.Repeat("x", i%17)
			case 2:
				vs[i] = "héllo wörld ✓"
			case 3:
				vs[i] = strings.Repeat("y", i%300)
			}
		}
		if long > 0 {
			vs[n/2] = strings.Repeat("z", long)
		}
		return vs
	}
	for _, tc := range []struct {
		name string
		vs   []string
	}{
		{"small", values(reserveMin-1, 0)},
		{"reserved", values(5000, 0)},
		{"over zeros", values(reserveMin, len(zeros())+1)},
		{"empty values", make([]string, 1000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plain, reserved := newColumn(0), newColumn(0) // id, a String
			if _, err := plain.Append(tc.vs); err != nil {
				t.Fatal(err)
			}
			if err := reserve(reserved, tc.vs); err != nil {
				t.Fatal(err)
			}
			if reserved.Rows() != 0 {
				t.Fatalf("reserve left %d rows", reserved.Rows())
			}
			if _, err := reserved.Append(tc.vs); err != nil {
				t.Fatal(err)
			}
			if plain.Rows() != len(tc.vs) || reserved.Rows() != len(tc.vs) {
				t.Fatalf("rows %d and %d, want %d", plain.Rows(), reserved.Rows(), len(tc.vs))
			}
			for i, v := range tc.vs {
				if got := reserved.Row(i, false); got != v {
					t.Fatalf("row %d = %.40q, want %.40q", i, got, v)
				}
			}
			if !bytes.Equal(encoded(plain), encoded(reserved)) {
				t.Fatal("the reserved column encodes differently")
			}
		})
	}
	t.Run("not empty", func(t *testing.T) {
		c := newColumn(0)
		if _, err := c.Append([]string{"a"}); err != nil {
			t.Fatal(err)
		}
		vs := values(1000, 0)
		if err := reserve(c, vs); err != nil {
			t.Fatal(err)
		}
		if c.Rows() != 1 || c.Row(0, false) != "a" {
			t.Fatalf("reserve changed a column that was not empty: %d rows", c.Rows())
		}
	})
	t.Run("not a String", func(t *testing.T) {
		c := newColumn(slices.IndexFunc(eventsTable.cols, func(c column[eventRow]) bool { return c.name == "attr_keys" }))
		if err := reserve(c, values(1000, 0)); err != nil || c.Rows() != 0 {
			t.Fatalf("reserve of an Array(String): %v, %d rows", err, c.Rows())
		}
	})
}

// TestWriteLargeBatchStoresValues: rows inserted in reserved columns
// (batches over reserveMin rows) read back as they were decoded.
func TestWriteLargeBatchStoresValues(t *testing.T) {
	_, conn := migratedDB(t)
	s, _, _ := newSink(t, Config{}, conn)
	recs, _ := benchRecords(t, 2000)
	if _, err := s.Write(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	var r rows
	for i, rec := range recs {
		if err := r.add(rec, i); err != nil {
			t.Fatal(err)
		}
	}
	var want []string
	for _, in := range r.inbound {
		want = append(want, in.wamid+"|"+in.from+"|"+in.text+"|"+in.eventID)
	}
	slices.Sort(want)
	rs, err := conn.Query(t.Context(), "SELECT concat(wamid, '|', from_number, '|', text, '|', event_id) AS v FROM inbound ORDER BY v")
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	var got []string
	for rs.Next() {
		var v string
		if err := rs.Scan(&v); err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	if len(want) < reserveMin || !slices.Equal(got, want) {
		t.Fatalf("inbound holds %d rows (first %q), want %d (first %q)", len(got), got[:min(1, len(got))], len(want), want[:1])
	}
}

// BenchmarkStringColumn appends 50,000 values of 10-14 bytes to a String
// column: as they come (plain), after sizing the bytes only (bytes), and
// after reserve, which sizes the positions too.
//
//	go test -run '^$' -bench BenchmarkStringColumn ./analytics/
func BenchmarkStringColumn(b *testing.B) {
	vs := make([]string, 50_000)
	for i := range vs {
		vs[i] = "wamid.in." + strconv.Itoa(i)
	}
	for _, tc := range []struct {
		name string
		size func(c chcol.Interface) error
	}{
		{"plain", func(chcol.Interface) error { return nil }},
		{"bytes", func(c chcol.Interface) error {
			n := 0
			for _, v := range vs {
				n += len(v)
			}
			_, err := c.Append([]string{zeros()[:n]})
			c.Reset()
			return err
		}},
		{"reserve", func(c chcol.Interface) error { return reserve(c, vs) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c, err := chcol.Type("String").Column("x", nil)
				if err != nil {
					b.Fatal(err)
				}
				if err := tc.size(c); err != nil {
					b.Fatal(err)
				}
				if _, err := c.Append(vs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestReserveAllocatesOnce: a String column reserved before its values
// are appended allocates its bytes and positions once, not as they grow
// (reserve stops doing so if clickhouse-go's columns stop keeping their
// capacity through Reset, or ch-go's Decode stops making room before it
// reads).
func TestReserveAllocatesOnce(t *testing.T) {
	vs := make([]string, 10_000)
	for i := range vs {
		vs[i] = "wamid.in." + strconv.Itoa(i)
	}
	fill := func(reserved bool) float64 {
		return testing.AllocsPerRun(5, func() {
			c, err := chcol.Type("String").Column("x", nil)
			if err != nil {
				t.Fatal(err)
			}
			if reserved {
				if err := reserve(c, vs); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := c.Append(vs); err != nil {
				t.Fatal(err)
			}
		})
	}
	// 10,000 positions of 16 bytes grow in about 30 steps.
	plain, reserved := fill(false), fill(true)
	if reserved > plain/2 {
		t.Errorf("a reserved column takes %v allocations, a plain one %v: reserve does not size it", reserved, plain)
	}
	t.Logf("allocations: plain %v, reserved %v", plain, reserved)
}
