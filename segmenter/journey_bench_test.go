package segmenter

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

// BenchmarkJourneyReply measures how fast a journey reacts to inbound
// WhatsApp replies through kfake: 5,000 users wait in a journey for a
// reply; their replies are produced at 5,000 a second, and each reply's
// latency is the time from its produce to the journey's dispatch request
// on the dispatch topic. One op is the whole run.
//
//	go test -run '^$' -bench BenchmarkJourneyReply -benchtime 1x ./segmenter/
func BenchmarkJourneyReply(b *testing.B) {
	const users, rate = 5000, 5000
	for b.Loop() {
		c := kafkatest.New(b, 8)
		s, err := New(Config{Keywords: []KeywordRule{}}, c.Config, nil, prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		j, err := compileJourney(&schemas.JourneyDef{
			App: testApp, ID: "support", Version: 1, Sender: testPNID, Entry: schemas.JourneyEntry{Keyword: "support"},
			Steps: []schemas.JourneyStep{
				{ID: "wait", Type: schemas.StepWaitEvent, Event: schemas.WaitWhatsAppReply, Timeout: "1h", OnEvent: "answer", OnTimeout: "end"},
				{ID: "answer", Type: schemas.StepSend, Channel: schemas.ChannelWhatsApp, Text: "Thanks, an agent will write to you", Next: "end"},
				{ID: "end", Type: schemas.StepExit},
			},
		})
		if err != nil {
			b.Fatal(err)
		}
		s.journeys.put(j)
		ctx, cancel := context.WithCancel(b.Context())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		phone := func(i int) string { return fmt.Sprintf("+4790005%04d", i) }
		msg := func(id string, i int, text string) *kgo.Record {
			e := &schemas.Event{
				ID: id, App: testApp, Kind: schemas.KindInbound, Name: schemas.EventWhatsAppReceived, Time: time.Now().UTC(),
				HWID: "whatsapp:" + phone(i), Inbound: &schemas.Inbound{PhoneNumberID: testPNID, From: phone(i), WAMID: "wamid." + id, Type: "text", Text: text},
			}
			v, err := e.Marshal()
			if err != nil {
				b.Fatal(err)
			}
			return &kgo.Record{Topic: schemas.TopicEvents, Key: e.Key(), Value: v}
		}
		cl := c.Client(b, kgo.ProducerLinger(0))
		var recs []*kgo.Record
		for i := range users {
			recs = append(recs, msg(fmt.Sprint("s", i), i, "support"))
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			b.Fatal(err)
		}
		adm := kadm.NewClient(cl)
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatal("the users did not all enter the journey")
			}
			if s.m != nil && int(testutilValue(s.m.journeyEntries)) >= users {
				break
			}
		}
		// Read the dispatch topic from its current end.
		ends, err := adm.ListEndOffsets(ctx, schemas.TopicDispatch)
		if err != nil {
			b.Fatal(err)
		}
		offs := map[int32]kgo.Offset{}
		ends.Each(func(o kadm.ListedOffset) { offs[o.Partition] = kgo.NewOffset().At(o.Offset) })
		rd := c.Client(b, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{schemas.TopicDispatch: offs}), kgo.FetchMaxWait(10*time.Millisecond))
		var mu sync.Mutex
		sent := make(map[string]time.Time, users)
		var lat []time.Duration
		got := make(chan struct{})
		go func() {
			defer close(got)
			for len(lat) < users && ctx.Err() == nil {
				fs := rd.PollFetches(ctx)
				now := time.Now()
				fs.EachRecord(func(r *kgo.Record) {
					to := strings.TrimPrefix(string(r.Key), testApp+"|")
					mu.Lock()
					if t, ok := sent[to]; ok {
						lat = append(lat, now.Sub(t))
						delete(sent, to)
					}
					mu.Unlock()
				})
			}
		}()
		start := time.Now()
		for i := range users {
			if d := time.Until(start.Add(time.Duration(i) * time.Second / rate)); d > 0 {
				time.Sleep(d)
			}
			mu.Lock()
			sent[phone(i)] = time.Now()
			mu.Unlock()
			cl.Produce(ctx, msg(fmt.Sprint("r", i), i, "my order is late"), nil)
		}
		select {
		case <-got:
		case <-time.After(60 * time.Second):
			b.Fatalf("%d of %d replies answered", len(lat), users)
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
		cancel()
		<-done
		s.Close()
	}
}

func testutilValue(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }
