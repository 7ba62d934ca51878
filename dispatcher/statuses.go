package dispatcher

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// The status tail follows, for each dispatch partition the ledger holds,
// the same partition of schemas.TopicIntents from where the ledger's load
// stopped, for the status marks ingest writes there (a status webhook
// echoing a dispatch id). Each status, as it arrives:
//
//   - is applied to the ledger (a redelivered request finds it);
//   - reconciles an in_doubt outcome of its dispatch id: an accepted
//     outcome with the status's wamid and Outcome.Reconciled set is
//     produced, superseding it, without waiting for the request to be
//     delivered again (Dispatcher.reconcile);
//   - if failed, teaches the reach gate what Meta reports only there:
//     131050 becomes a suppression, 131047 a closed window
//     (reachGate.learnStatus).
//
// The partitions are those of this replica's assignment, so the replica
// that owns a recipient's requests is the one that learns from and
// reconciles its statuses. A partition is followed from its first batch
// after the assignment (the ledger's load) until it is revoked.

// statusMarker is in the value of every status mark and of no intent or
// answered mark: the others need not be decoded.
var statusMarker = []byte(`"status"`)

// reconcileTimeout bounds producing one reconciled outcome.
const reconcileTimeout = 10 * time.Second

// statusTail is the dispatcher's reader of the intents partitions it owns.
type statusTail struct {
	cl  *kgo.Client
	log *slog.Logger

	mu        sync.Mutex
	following map[int32]bool
}

func newStatusTail(opts []kgo.Opt, log *slog.Logger) (*statusTail, error) {
	cl, err := kgo.NewClient(append(append([]kgo.Opt(nil), opts...),
		// Records deleted by retention meanwhile: go on from the first one left.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(250*time.Millisecond),
	)...)
	if err != nil {
		return nil, fmt.Errorf("dispatcher: creating the status tail client: %w", err)
	}
	return &statusTail{cl: cl, log: log, following: make(map[int32]bool)}, nil
}

// follow starts reading partition p of the intents topic at offset from
// (again from there if it was followed already).
func (t *statusTail) follow(p int32, from int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.following[p] {
		t.cl.RemoveConsumePartitions(map[string][]int32{schemas.TopicIntents: {p}})
	}
	t.following[p] = true
	t.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{schemas.TopicIntents: {p: kgo.NewOffset().At(from)}})
}

// unfollow stops reading partitions ps.
func (t *statusTail) unfollow(ps []int32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var rm []int32
	for _, p := range ps {
		if t.following[p] {
			delete(t.following, p)
			rm = append(rm, p)
		}
	}
	if len(rm) > 0 {
		t.cl.RemoveConsumePartitions(map[string][]int32{schemas.TopicIntents: rm})
	}
}

func (t *statusTail) close() { t.cl.Close() }

// runStatusTail reads the followed partitions until ctx is done and hands
// each status mark to onStatus.
func (d *Dispatcher) runStatusTail(ctx context.Context) {
	for {
		fs := d.tail.cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return // (a closed client answers every poll at once)
		}
		fs.EachError(func(topic string, p int32, err error) {
			if d.throttle.allow("status_tail") {
				d.log.Warn("reading statuses back", "topic", topic, "partition", p, "err", err)
			}
		})
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			if len(fp.Records) == 0 {
				return
			}
			for _, r := range fp.Records {
				if !bytes.Contains(r.Value, statusMarker) {
					continue
				}
				if m, err := schemas.DecodeDeliveryMark(r.Value); err == nil && m.Kind == schemas.MarkStatus {
					d.onStatus(ctx, r.Partition, r.Offset, m)
				}
			}
			d.ledger.advance(fp.Partition, fp.Records[len(fp.Records)-1].Offset+1)
		})
	}
}

// onStatus applies one status mark of partition p: the ledger, a
// reconciliation it makes due, what a failed status teaches.
func (d *Dispatcher) onStatus(ctx context.Context, p int32, off int64, m *schemas.DeliveryMark) {
	job, due, owned := d.ledger.status(p, off, m)
	if !owned {
		return
	}
	if due {
		d.reconcile(ctx, job)
	}
	d.reach.learnStatus(ctx, m)
}

// learnLoaded learns from the failed statuses a ledger load read back
// (statuses that arrived while no replica followed the partition); the
// reach gate ignores what it knows already.
func (d *Dispatcher) learnLoaded(ctx context.Context, failed []*schemas.DeliveryMark) {
	for _, m := range failed {
		d.reach.learnStatus(ctx, m)
	}
}

// reconcile produces the accepted outcome that supersedes job's in_doubt
// one and notes it in the ledger. On failure the next status of the id
// tries again, or a redelivery of the request settles it.
func (d *Dispatcher) reconcile(ctx context.Context, job reconcileJob) {
	o := *job.doubt
	o.State, o.ProviderID, o.ErrorCode = schemas.OutcomeAccepted, job.wamid, 0
	o.Reconciled = true
	o.ErrorMessage = fmt.Sprintf("reconciled: status %s of %s (%s) arrived after the in_doubt outcome of %s",
		job.status, job.wamid, job.statusAt.UTC().Format(time.RFC3339), job.doubt.Time.UTC().Format(time.RFC3339))
	// At least a second after the in_doubt outcome: readers keeping the
	// latest outcome by a time in seconds (ClickHouse's messages) keep
	// this one.
	o.Time = time.Now().UTC()
	if floor := job.doubt.Time.Truncate(time.Second).Add(time.Second); o.Time.Before(floor) {
		o.Time = floor
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reconcileTimeout)
	defer cancel()
	if err := d.cl.ProduceSync(pctx, outcomeRecord(&o)).FirstErr(); err != nil {
		d.ledger.unreconciled(job.p, o.DispatchID)
		if d.throttle.allow("reconcile") {
			d.log.Warn("writing a reconciled outcome", "dispatch_id", o.DispatchID, "err", err)
		}
		return
	}
	d.ledger.decided(job.p, []*schemas.Outcome{&o})
	d.m.reconciled.Inc()
	d.log.Info("send in doubt reconciled from a late status", "dispatch_id", o.DispatchID, "app", o.App,
		"status", job.status, "wamid", job.wamid)
}
