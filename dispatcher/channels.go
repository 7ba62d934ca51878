package dispatcher

import (
	"net/http"

	"github.com/heraldhq/herald/schemas"
)

// channels are the email and push providers and their rate limits. Each
// channel has its own Limiter (its own rate: 14 emails or 500 pushes a
// second per sender by default, not WhatsApp's 80), and the breakers are
// the dispatcher's, keyed by (channel, sender): the From address for email,
// the FCM project for push.
type channels struct {
	email    *Email
	push     *Push
	limiters map[schemas.Channel]Limiter
}

func newChannels(cfg Config, hc *http.Client) (channels, error) {
	email, err := NewEmail(cfg.Email)
	if err != nil {
		return channels{}, err
	}
	return channels{
		email: email,
		push:  NewPush(cfg.Push.FCMBaseURL, hc, nil),
		limiters: map[schemas.Channel]Limiter{
			schemas.ChannelEmail: newLocalLimiter(func(string) float64 { return cfg.Email.RatePerSender }, cfg.Email.Burst),
			schemas.ChannelPush:  newLocalLimiter(func(string) float64 { return cfg.Push.RatePerSender }, cfg.Push.Burst),
			// A journey's webhook calls, per endpoint host: gentle on the
			// app's own servers.
			schemas.ChannelWebhook: newLocalLimiter(func(string) float64 { return webhookRate }, 10),
		},
	}, nil
}

func (c channels) close() {
	if c.email != nil {
		c.email.Close()
	}
}

// limiterFor is the limiter of a channel: its own for email and push, the
// dispatcher's (WhatsApp's) otherwise.
func (d *Dispatcher) limiterFor(ch schemas.Channel) Limiter {
	if l, ok := d.channels.limiters[ch]; ok {
		return l
	}
	return d.limiter
}

// channelOutcome fills what an email or push outcome adds: the template
// name the message was rendered from, and whether the provider said the
// recipient is gone for good.
func channelOutcome(o *schemas.Outcome, req *schemas.DispatchRequest, err error) {
	switch {
	case req.Channel == schemas.ChannelEmail && req.Email != nil && req.Email.Template != "":
		o.Template = req.Email.Template
	case req.Channel == schemas.ChannelPush && req.Push != nil && req.Push.Template != "":
		o.Template = req.Push.Template
	}
	if err != nil && invalidRecipient(err) {
		o.InvalidRecipient = true
	}
}
