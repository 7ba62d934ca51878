package dedup

import (
	"strconv"
	"sync"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func TestWindowRemembersForAPeriodAndForgetsAfterTwo(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	w := newWindow(time.Hour, 0, c.now)
	k := []byte("app/wamid.1/delivered")
	if w.Contains(k) {
		t.Fatal("empty window contains a key")
	}
	w.Add(k)
	if !w.Contains(k) {
		t.Fatal("key just added is missing")
	}
	c.add(59 * time.Minute)
	if !w.Contains(k) {
		t.Fatal("key forgotten within the period")
	}
	c.add(2 * time.Minute) // rotated once: key is in prev
	if !w.Contains(k) {
		t.Fatal("key forgotten after one rotation")
	}
	if w.Contains([]byte("other")) {
		t.Fatal("unknown key reported")
	}
	c.add(time.Hour) // rotated twice
	if w.Contains(k) {
		t.Fatal("key still present after two periods")
	}
}

func TestWindowLongIdleDropsEverything(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	w := newWindow(time.Minute, 0, c.now)
	w.Add([]byte("a"))
	c.add(30 * time.Second)
	w.Add([]byte("b"))
	c.add(3 * time.Minute) // one rotate call covering more than two periods
	if w.Contains([]byte("a")) || w.Contains([]byte("b")) {
		t.Fatal("keys older than two periods survived a late rotation")
	}
	if n := w.Len(); n != 0 {
		t.Fatalf("Len = %d after everything expired", n)
	}
}

func TestWindowConcurrent(t *testing.T) {
	w := New(time.Hour, 0)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5000 {
				w.Add([]byte(strconv.Itoa(g) + "/" + strconv.Itoa(i)))
			}
		}()
	}
	wg.Wait()
	for g := range 4 {
		for i := range 5000 {
			if k := []byte(strconv.Itoa(g) + "/" + strconv.Itoa(i)); !w.Contains(k) {
				t.Fatalf("key %s lost", k)
			}
		}
	}
	if n := w.Len(); n != 20000 {
		t.Fatalf("Len = %d, want 20000", n)
	}
}

func BenchmarkWindow(b *testing.B) {
	w := New(time.Hour, 32<<20)
	keys := make([][]byte, 1024)
	for i := range keys {
		keys[i] = []byte("app/messageId-" + strconv.Itoa(i))
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			k := keys[i&1023]
			if !w.Contains(k) {
				w.Add(k)
			}
			i++
		}
	})
}
