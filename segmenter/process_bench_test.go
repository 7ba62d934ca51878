package segmenter

import (
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/VictoriaMetrics/fastcache"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

// benchEvents builds a realistic mix for users users, perUser events each,
// interleaved the way a partition sees them: 10% register, 15% tags, 35%
// custom events, 30% inbound (a third of them keywords), 10% statuses.
func benchEvents(tb testing.TB, users, perUser int) []*kgo.Record {
	rng := rand.New(rand.NewPCG(1, 2))
	texts := []string{"PROMO", "help please", "hi, when does my order arrive?", "thanks!", "Promo!", "where is the store?"}
	names := []string{"PW_ApplicationOpen", "PW_ScreenOpen", "AddToCart", "Purchase", "ViewItem", "Search"}
	out := make([]*kgo.Record, 0, users*perUser)
	for i := range users * perUser {
		u := i % users
		phone := fmt.Sprintf("+1415555%04d", u)
		e := &schemas.Event{
			ID:   fmt.Sprintf("%032x", i),
			App:  "shop",
			Time: t0.Add(time.Duration(i) * time.Millisecond),
			HWID: "whatsapp:" + phone,
		}
		switch r := rng.IntN(100); {
		case r < 10:
			e.Kind, e.Name = schemas.KindRegister, schemas.EventDeviceRegistered
			e.DeviceType, e.Language, e.Country, e.Timezone = schemas.DeviceWhatsApp, "en", "US", "America/Los_Angeles"
			e.Tags = map[string]any{"first_name": "Ana", "tier": "gold", "points": float64(rng.IntN(5000))}
		case r < 25:
			e.Kind = schemas.KindTags
			e.Tags = map[string]any{"last_order": "2025-05-30 10:00", "cuisines": []any{"asian", "italian"}, "vip": rng.IntN(2) == 0}
		case r < 60:
			e.Kind, e.Name = schemas.KindEvent, names[rng.IntN(len(names))]
			e.Attributes = map[string]any{"sku": "A-1", "price": 12.5}
		case r < 90:
			e.Kind, e.Name = schemas.KindInbound, schemas.EventWhatsAppReceived
			e.Inbound = &schemas.Inbound{PhoneNumberID: "1098765", From: phone, WAMID: "wamid.HBgL" + e.ID, Type: "text", Text: texts[rng.IntN(len(texts))], ProfileName: "Ana"}
		default:
			e.Kind, e.Name = schemas.KindStatus, schemas.EventWhatsAppStatus
			e.Status = &schemas.Status{PhoneNumberID: "1098765", WAMID: "wamid.x" + e.ID, Status: "delivered", Recipient: phone}
		}
		out = append(out, record(tb, e))
	}
	return out
}

// touchValue reads every byte v holds and reaches (strings, slices, maps,
// pointers, interfaces), returning a sum of them: BenchmarkApply's
// stand-in for an event's decode, which leaves its memory in the caches.
func touchValue(v reflect.Value) int {
	switch v.Kind() {
	case reflect.String:
		return touchString(v.String())
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return 0
		}
		return touchValue(v.Elem())
	case reflect.Slice, reflect.Array:
		n := v.Len()
		for i := range v.Len() {
			n += touchValue(v.Index(i))
		}
		return n
	case reflect.Map: // the event's maps, without MapRange's allocations
		switch m := v.Interface().(type) {
		case map[string]any:
			return touchAny(m)
		case map[string]string:
			n := len(m)
			for k, x := range m {
				n += touchString(k) + touchString(x)
			}
			return n
		}
		panic(fmt.Sprintf("touchValue: a map of type %s", v.Type()))
	case reflect.Struct:
		n := 0
		for i := range v.NumField() {
			n += touchValue(v.Field(i))
		}
		return n
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return int(v.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return int(v.Uint())
	case reflect.Bool:
		if v.Bool() {
			return 1
		}
	case reflect.Float32, reflect.Float64:
		return int(v.Float())
	}
	return 0
}

// touchAny is touchValue of a value decoded from JSON into an any.
func touchAny(x any) int {
	switch x := x.(type) {
	case string:
		return touchString(x)
	case float64:
		return int(x)
	case bool:
		if x {
			return 1
		}
	case []any:
		n := len(x)
		for _, y := range x {
			n += touchAny(y)
		}
		return n
	case map[string]any:
		n := len(x)
		for k, y := range x {
			n += touchString(k) + touchAny(y)
		}
		return n
	}
	return 0
}

// touchString sums the bytes of s.
func touchString(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		n += int(s[i])
	}
	return n
}

// touchBytes sums the bytes of b.
func touchBytes(b []byte) int {
	n := 0
	for _, c := range b {
		n += int(c)
	}
	return n
}

// benchEnv is the number the environment variable name holds, def when it
// is unset; anything but a number of at least low fails tb with want.
func benchEnv(tb testing.TB, name string, def, low int, want string) int {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < low {
		tb.Fatalf("%s=%q: want %s", name, v, want)
	}
	return n
}

// BenchmarkProcess measures Process over batches of 500 records; one op is
// one batch, SetBytes counts the record values.
//
// HERALD_BENCH_PROCESS_SEGMENT, when set, is the filter of a segment of
// the app ("active in the last week": T("Last Seen", GTE, -7d)).
//
//	go test -run '^$' -bench BenchmarkProcess -benchtime 2s ./segmenter/
func BenchmarkProcess(b *testing.B) {
	const batch = 500
	users, perUser := 4096, 16 // more than 8 events per user: replayed ids are not recent ones
	if n := benchEnv(b, "HERALD_BENCH_PROCESS_USERS", 0, 1, "a number of users"); n != 0 {
		// More users than the decoded profiles kept (hotMax): most events
		// then read their profile from the cache and decode it, as in
		// herald bench, where a user's next event comes 100,000 later.
		users, perUser = n, max(9, 65536/n)
	}
	recs := benchEvents(b, users, perUser)
	s := newTest(b, Config{})
	if f := os.Getenv("HERALD_BENCH_PROCESS_SEGMENT"); f != "" {
		s.segs.put(mustSegment(b, testApp, "bench", f))
	}
	if users != 4096 {
		// Every user has a stored profile before the clock starts.
		for part := range slices.Chunk(recs, batch) {
			if _, err := s.Process(b.Context(), part); err != nil {
				b.Fatal(err)
			}
		}
		for _, r := range recs {
			r.Offset += int64(len(recs))
		}
	}
	dups := s.m.duplicates
	var size int64
	for _, r := range recs {
		size += int64(len(r.Value))
	}
	size = size * batch / int64(len(recs)) // average batch
	b.ReportAllocs()
	b.SetBytes(size)
	i, outs, events := 0, 0, 0
	cpu0 := cpuTime()
	for b.Loop() {
		if i == len(recs) {
			// Replay with later offsets, as new records: a profile skips
			// records at or before the last offset it applied. Every
			// record of a pass is processed (the last batch may be
			// short): a user whose last event were left out would meet
			// its first one again among its recent ids, a duplicate.
			for _, r := range recs {
				r.Offset += int64(len(recs))
			}
			i = 0
		}
		part := recs[i:min(i+batch, len(recs))]
		out, err := s.Process(b.Context(), part)
		if err != nil {
			b.Fatal(err)
		}
		outs += len(out)
		i += len(part)
		events += len(part)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(events), "ns/event")
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(events), "cpu-ns/event")
	if outs == 0 {
		b.Fatal("no dispatch requests produced")
	}
	if n := testutil.ToFloat64(dups); n > 0 {
		b.Fatalf("%v events skipped as duplicates: the benchmark would measure the skip", n)
	}
}

// cpuTime is the CPU time the process used so far (user and system, every
// thread): per-event CPU cost that other load on the machine does not
// inflate the way it does wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDecodeEvent is the floor under BenchmarkProcess: decoding the
// same records with schemas.DecodeEvent and nothing else.
func BenchmarkDecodeEvent(b *testing.B) {
	const batch = 500
	recs := benchEvents(b, 4096, 16)
	var size int64
	for _, r := range recs {
		size += int64(len(r.Value))
	}
	b.ReportAllocs()
	b.SetBytes(size * batch / int64(len(recs)))
	i := 0
	for b.Loop() {
		if i+batch > len(recs) {
			i = 0
		}
		for _, r := range recs[i : i+batch] {
			if _, err := schemas.DecodeEvent(r.Value); err != nil {
				b.Fatal(err)
			}
		}
		i += batch
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/event")
}

// BenchmarkRestore measures restoring 1,000,000 profiles (10 tags and 4
// event counters each, about 330 bytes) from the changelog on 8 partitions
// of an in-process kfake broker into an empty cache, as a segmenter does
// on partition assignment. One op is one whole restore.
//
//	go test -run '^$' -bench BenchmarkRestore -benchtime 3x ./segmenter/
func BenchmarkRestore(b *testing.B) {
	const profiles, partitions = 1_000_000, 8
	c := kafkatest.New(b, partitions)
	cl := c.Client(b, kgo.RecordPartitioner(newChangelogPartitioner()), kgo.ProducerLinger(5*time.Millisecond))
	p := &Profile{
		Registered: true, DeviceType: schemas.DeviceWhatsApp, Language: "en", Country: "US", Timezone: "America/Los_Angeles",
		FirstSeen: t0, LastSeen: t0, tags: map[string]Tag{},
	}
	for i := range 10 {
		p.Tags()[fmt.Sprintf("tag_%d", i)] = Tag{Kind: TagString, Str: fmt.Sprintf("value %d", i)}
	}
	for i := range 4 {
		p.Events = append(p.Events, EventCount{Name: fmt.Sprintf("Event%d", i), Count: uint64(i + 1), Last: t0})
	}
	var bytes int64
	var wg sync.WaitGroup
	var perr atomic.Value
	for i := range profiles {
		p.WhatsApp = fmt.Sprintf("+1415%07d", i)
		p.src = srcPos{partition: int32(i % partitions), next: int64(i/partitions + 1)}
		v := appendProfile(nil, p)
		bytes += int64(len(v))
		wg.Add(1)
		cl.Produce(b.Context(), &kgo.Record{
			Topic: schemas.TopicProfiles, Partition: int32(i % partitions),
			Key: []byte("shop|whatsapp:" + p.WhatsApp), Value: v,
		}, func(_ *kgo.Record, err error) {
			if err != nil {
				perr.Store(err)
			}
			wg.Done()
		})
	}
	wg.Wait()
	if err, _ := perr.Load().(error); err != nil {
		b.Fatal(err)
	}
	parts := make([]int32, partitions)
	for i := range parts {
		parts[i] = int32(i)
	}
	b.SetBytes(bytes)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		s, err := New(Config{CacheBytes: 1 << 30}, c.Config, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		n, err := s.restore(b.Context(), s.cl, parts)
		b.StopTimer()
		if err != nil || n != profiles {
			b.Fatalf("restored %d profiles (%v), want %d", n, err, profiles)
		}
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(profiles)*float64(b.N)/b.Elapsed().Seconds(), "profiles/s")
}

// BenchmarkCampaign measures one partition's share of a partition-wide
// record over 1,000,000 profiles (10 tags each, HERALD_BENCH_PROFILES to
// change) all of which match: visiting the key index, decoding each
// profile, matching the filter and building and encoding its output. One op
// is the whole run. The sub-benchmarks differ in what the run changes:
//
//   - cap=none: a campaign without a frequency cap, which changes no
//     profile (nothing to count).
//   - cap=marketing: the same under Config.Limits.MaxMarketing, which
//     counts the send in every profile: each gets a changelog record.
//   - cap=campaign: the campaign's own Campaign.FrequencyCap instead.
//   - sweep: a sweep of a new segment every profile enters (one segment
//     event and one changelog record each).
//
// Each runs twice: through Process (process: every output held until the
// record ends) and as handle runs it (parts: outputs and changed profiles
// handed out every partChunk, here dropped, as produced ones are once
// acknowledged).
//
// Besides time, it reports the CPU time per run (cpu-s/op: user and system,
// every thread) and the peak heap the run held (peak-heap-MB: the heap's
// objects, live or not yet collected; peak-live-MB: the live heap as the
// last GC marked it), above the heap before the run, both sampled every
// millisecond.
//
//	go test -run '^$' -bench BenchmarkCampaign -benchtime 1x -benchmem ./segmenter/
func BenchmarkCampaign(b *testing.B) {
	profiles := 1_000_000
	if v := os.Getenv("HERALD_BENCH_PROFILES"); v != "" {
		var err error
		if profiles, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	week := int64(7 * 24 * 3600)
	for _, bc := range []struct {
		name    string
		limits  Limits
		cap     *schemas.FrequencyCap
		sweep   bool
		changes bool // every profile gets a changelog record
	}{
		{name: "cap=none"},
		{name: "cap=marketing", limits: Limits{MaxMarketing: 1 << 20}, changes: true},
		{name: "cap=campaign", cap: &schemas.FrequencyCap{Max: schemas.MaxFrequencyCap, PeriodSeconds: week}, changes: true},
		{name: "sweep", sweep: true, changes: true},
	} {
		for _, parts := range []bool{false, true} {
			name := bc.name + "/process"
			if parts {
				name = bc.name + "/parts"
			}
			b.Run(name, func(b *testing.B) { benchCampaign(b, profiles, bc.limits, bc.cap, bc.sweep, bc.changes, parts) })
		}
	}
}

// benchCampaign is one case of BenchmarkCampaign.
func benchCampaign(b *testing.B, profiles int, limits Limits, fcap *schemas.FrequencyCap, sweep, changes, parts bool) {
	s := newTest(b, Config{CacheBytes: 2 << 30, Limits: limits})
	p := &Profile{Registered: true, DeviceType: schemas.DeviceWhatsApp, Language: "en", Country: "US", tags: map[string]Tag{}, FirstSeen: t0, LastSeen: t0}
	for i := range 9 {
		p.Tags()[fmt.Sprintf("tag_%d", i)] = Tag{Kind: TagString, Str: fmt.Sprintf("value %d", i)}
	}
	p.Tags()["Cuisines"] = Tag{Kind: TagList, List: []string{"asian", "italian"}}
	for i := range profiles {
		p.WhatsApp = fmt.Sprintf("+1415%07d", i)
		key := []byte("shop|whatsapp:" + p.WhatsApp)
		s.cache.Set(key, appendProfile(nil, p))
		s.keys.add(0, key)
	}
	const filter = `T("Cuisines", IN, "asian") * T("Registered", EQ, true)`
	want := profiles
	if changes {
		want *= 2
	}
	var cpu time.Duration
	var peakHeap, peakLive uint64
	run := 0
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		// A new campaign (or segment) each run: a re-run of the
		// same one counts nobody again (nor enters anybody).
		run++
		e := &schemas.Event{ID: fmt.Sprintf("bench-p0-%d", run), App: testApp, Time: t0, Received: t0}
		if sweep {
			e.Kind, e.Sweep = schemas.KindSweep, &schemas.Sweep{Segment: fmt.Sprintf("asian-%d", run), Filter: filter}
		} else {
			e.Kind, e.Campaign = schemas.KindCampaign, &schemas.Campaign{
				ID: fmt.Sprintf("bench-%d", run), Filter: filter, Sender: testPNID, FrequencyCap: fcap,
				Template: schemas.Template{Name: "sushi_promo", Language: "en_US", Category: CategoryMarketing, Body: []string{"{{tag:tag_1|there}}"}},
			}
		}
		v, err := e.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		rec := &kgo.Record{Topic: schemas.TopicEvents, Key: e.Key(), Value: v}
		b.StopTimer()
		runtime.GC()
		stop := sampleHeap()
		c0 := cpuTime()
		b.StartTimer()
		emitted := 0
		var emit func([]*kgo.Record)
		if parts {
			emit = func(out []*kgo.Record) { emitted += len(out) }
		}
		out, err := s.Segmenter.process(b.Context(), []*kgo.Record{rec}, emit)
		b.StopTimer()
		cpu += cpuTime() - c0
		h, l := stop()
		peakHeap, peakLive = max(peakHeap, h), max(peakLive, l)
		if err != nil || emitted+len(out) != want {
			b.Fatalf("%d records (%v), want %d", emitted+len(out), err, want)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(profiles)*float64(b.N)/b.Elapsed().Seconds(), "requests/s")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
	b.ReportMetric(float64(peakHeap)/(1<<20), "peak-heap-MB")
	b.ReportMetric(float64(peakLive)/(1<<20), "peak-live-MB")
}

// sampleHeap samples the heap every millisecond until the function it
// returns is called, which returns the peaks of the heap's objects and of
// the live heap (as the last GC marked it) above their values at the start.
func sampleHeap() (stop func() (heap, live uint64)) {
	ms := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/live:bytes"}}
	rtmetrics.Read(ms)
	heap0, live0 := ms[0].Value.Uint64(), ms[1].Value.Uint64()
	var peakHeap, peakLive uint64
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			rtmetrics.Read(ms)
			peakHeap = max(peakHeap, ms[0].Value.Uint64()-min(heap0, ms[0].Value.Uint64()))
			peakLive = max(peakLive, ms[1].Value.Uint64()-min(live0, ms[1].Value.Uint64()))
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() (uint64, uint64) {
		close(done)
		<-finished
		return peakHeap, peakLive
	}
}

// BenchmarkMemory loads profiles with 10 tags each (HERALD_BENCH_PROFILES,
// default 10,000,000) through Process, as register events in batches of
// 1,000 on 8 partitions, and reports the process's resident memory after a
// GC, the cache's own size, and the key index's. One op is the whole load.
//
//	HERALD_BENCH_PROFILES=10000000 go test -run '^$' -bench BenchmarkMemory -benchtime 1x -timeout 30m ./segmenter/
//
// With HERALD_BENCH_JOURNEY set, every profile also enters a journey and
// waits in it (issue 6: 1,000,000 users in active journeys).
func BenchmarkMemory(b *testing.B) {
	n := 10_000_000
	if v := os.Getenv("HERALD_BENCH_PROFILES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	cacheBytes := 3 << 30
	if v := os.Getenv("HERALD_BENCH_CACHE_BYTES"); v != "" {
		var err error
		if cacheBytes, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	journeys := os.Getenv("HERALD_BENCH_JOURNEY") != ""
	for b.Loop() {
		s := newTest(b, Config{CacheBytes: cacheBytes})
		if journeys {
			// Every profile enters a journey and waits in it: its run is
			// in the profile, its timer in the partition's heap.
			j, err := compileJourney(&schemas.JourneyDef{
				App: "shop", ID: "onboarding", Version: 1, Entry: schemas.JourneyEntry{Event: schemas.EventDeviceRegistered},
				Steps: []schemas.JourneyStep{
					{ID: "wait", Type: schemas.StepWaitEvent, Event: schemas.EventPushOpened, Timeout: "24h", OnEvent: "end", OnTimeout: "end"},
					{ID: "end", Type: schemas.StepExit},
				},
			})
			if err != nil {
				b.Fatal(err)
			}
			s.journeys.put(j)
		}
		const batch = 1000
		recs := make([]*kgo.Record, batch)
		start := time.Now()
		for i := 0; i < n; i += batch {
			for j := range recs {
				u := i + j
				e := &schemas.Event{
					ID: "m" + strconv.Itoa(u), App: "shop", Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered,
					Time: t0, Received: t0, HWID: "whatsapp:+1" + strconv.Itoa(4150000000+u), DeviceType: schemas.DeviceWhatsApp,
					Language: "en", Country: "US", Timezone: "America/Los_Angeles", Tags: map[string]any{
						"first_name": "Ana", "last_name": "Silva", "city": "Lisbon", "tier": "gold", "points": float64(u % 5000),
						"vip": u%2 == 0, "cuisines": []any{"asian", "italian"}, "last_order": "2026-11-30 10:00", "plan": "monthly", "app_lang": "pt",
					},
				}
				v, err := e.Marshal()
				if err != nil {
					b.Fatal(err)
				}
				recs[j] = &kgo.Record{Topic: schemas.TopicEvents, Partition: int32(u % 8), Key: e.Key(), Value: v, Offset: int64(u)}
			}
			if _, err := s.Process(b.Context(), recs); err != nil {
				b.Fatal(err)
			}
		}
		took := time.Since(start)
		s.clearHot()
		runtime.GC()
		debug.FreeOSMemory()
		var st fastcache.Stats
		s.cache.UpdateStats(&st)
		if int(st.EntriesCount) != n {
			b.Fatalf("%d profiles in the cache, want %d (evicted: raise HERALD_BENCH_CACHE_BYTES)", st.EntriesCount, n)
		}
		var keyBytes int
		for p := range int32(8) {
			if pk := s.keys.parts[p]; pk != nil {
				keyBytes += cap(pk.arena) + 4*cap(pk.ends)
			}
		}
		b.ReportMetric(float64(rss(b))/(1<<30), "GiB-rss")
		b.ReportMetric(float64(st.BytesSize)/(1<<30), "GiB-cache")
		b.ReportMetric(float64(keyBytes)/(1<<30), "GiB-keys")
		b.ReportMetric(float64(n)/took.Seconds(), "profiles/s")
		if journeys {
			b.ReportMetric(float64(s.timers.size()), "timers")
		}
		s.Close()
	}
}

// rss is the resident memory of the process, from /proc/self/status.
func rss(tb testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Skipf("no /proc/self/status: %v", err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb << 10
		}
	}
	tb.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// BenchmarkApply measures the work issue 4's first speed figure names:
// profile update, keyword triggers and incremental segment evaluation, in
// process, on one goroutine. The events are BenchmarkProcess's mix, decoded
// beforehand; the profiles are resident and decoded (4,096 users); eight
// saved segments of the app (tags, event counts and attributes, relative
// times, the sushi segment of PRODUCT.md) are evaluated where a change can
// affect them, and the default keyword rules answer PROMO and HELP with
// encoded dispatch requests. What it leaves out, BenchmarkProcess adds:
// decoding the event JSON, the profile's round trip through fastcache (read,
// decode, encode, write) and the changelog and tags records.
//
// The events are applied a part at a time, as Run does: handlePart events,
// and before each part (with the timer stopped) every byte of its events
// and records is read, which leaves them in the CPU's caches as a part's
// decode does before the part is applied (Segmenter.decodeAll). Without it
// the benchmark would read each event from main memory: its 65,536 decoded
// events take about 100 MB, ten times the last-level cache, while a part's
// 2,500 take about 4 MB. HERALD_BENCH_APPLY_PART sets the part's size, and
// 0 applies the events without reading them first (each from memory: the
// benchmark's form before stop 25).
//
// HERALD_BENCH_APPLY_USERS sets the number of users (4,096 by default):
// fewer users' profiles stay in the CPU's caches, which shows how much of
// the time is memory access (docs/BENCHMARKS.md). HERALD_BENCH_APPLY_PER_USER
// sets the events per user (16): with few users and many events each, the
// events no longer fit the caches while the profiles do. evals/event is
// the segments evaluated per event. It runs with the segmenter's GC target
// (gc_percent); GOGC=100 measures at Go's default.
//
//	go test -run '^$' -bench BenchmarkApply -benchmem -count 3 -cpu 1 ./segmenter/
func BenchmarkApply(b *testing.B) {
	users := benchEnv(b, "HERALD_BENCH_APPLY_USERS", 4096, 1, "a number of users")
	perUser := benchEnv(b, "HERALD_BENCH_APPLY_PER_USER", 16, 9, "9 or more events per user (fewer repeat recent ids)")
	part := benchEnv(b, "HERALD_BENCH_APPLY_PART", handlePart, 0, "a number of events, 0 for none read beforehand")
	recs := benchEvents(b, users, perUser)
	s := newTest(b, Config{})
	for i, f := range []string{
		`T("tier", EQ, "gold")`,
		`T("vip", EQ, true) * T("points", GTE, 1000)`,
		`Event("Purchase", "count", GTE, 2)`,
		`Event("AddToCart", "sku", EQ, "A-1") \ Event("Purchase", "count", GTE, 1)`,
		`T("cuisines", IN, ["asian", "japanese"]) * T("Registered", EQ, true)`,
		`T("Last Seen", GTE, "-7d")`,
		`T("Country", IN, ["US", "CA"]) + T("Language", EQ, "es")`,
		`Event("PW_ApplicationOpen", "count", BETWEEN, [1, 10])`,
	} {
		s.segs.put(mustSegment(b, testApp, fmt.Sprintf("s%d", i), f))
	}
	type item struct {
		rec *kgo.Record
		e   *schemas.Event
		key []byte
		p   *Profile // found beforehand: a map lookup here is not the segmenter's work
	}
	items := make([]item, len(recs))
	profiles := make(map[string]*Profile)
	for i, r := range recs {
		e, err := schemas.DecodeEventAttrs(r.Value)
		if err != nil {
			b.Fatal(err)
		}
		key := e.Key()
		p := profiles[string(key)]
		if p == nil {
			p = new(Profile)
			profiles[string(key)] = p
		}
		items[i] = item{r, e, key, p}
	}
	now := t0.Add(testNow)
	var out []*kgo.Record
	run := func(it item) {
		out = out[:0]
		var u update
		out, u = s.update(out, it.key, it.rec, it.e, it.p, now)
		out = s.trigger(out, it.key, it.rec, it.e, it.p, u.dup, now)
	}
	for _, it := range items { // warm: every user has a profile with tags and events
		run(it)
	}
	dups0 := testutil.ToFloat64(s.m.duplicates)
	// touch reads a part's events, records and keys, as their decode
	// wrote them, outside the time measured (cpu counts only the rest).
	var cpu time.Duration
	cpu0, sink := time.Duration(0), 0
	touch := func(from int) {
		b.StopTimer()
		cpu += cpuTime() - cpu0
		for _, it := range items[from:min(from+part, len(items))] {
			sink += touchValue(reflect.ValueOf(it.e).Elem()) + touchBytes(it.rec.Value) + touchBytes(it.key) +
				int(it.rec.Partition) + int(it.rec.Offset)
		}
		cpu0 = cpuTime()
		b.StartTimer()
	}
	b.ReportAllocs()
	i, outs, changes := 0, 0, 0
	cpu0 = cpuTime()
	for b.Loop() {
		if i == len(items) {
			i = 0
		}
		if part > 0 && i%part == 0 {
			touch(i)
		}
		run(items[i])
		for _, r := range out {
			if r.Topic == schemas.TopicDispatch {
				outs++
			} else {
				changes++
			}
		}
		i++
	}
	cpu += cpuTime() - cpu0
	if sink == -1 {
		b.Log(sink) // keeps the reads
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/event")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(testutil.ToFloat64(s.m.segmentEvals)/float64(b.N+len(items)), "evals/event")
	if outs == 0 || changes == 0 {
		b.Fatalf("%d dispatch requests and %d segment events: the rules or segments did not run", outs, changes)
	}
	if testutil.ToFloat64(s.m.duplicates) != dups0 {
		b.Fatal("events counted as duplicates: the benchmark would measure the skip")
	}
}
