package wasim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

type contactJSON struct {
	Profile profileJSON `json:"profile"`
	WAID    string      `json:"wa_id"`
}

type profileJSON struct {
	Name string `json:"name"`
}

// inboundJSON is a message a user sent (value.messages[]).
type inboundJSON struct {
	Context   *inboundContext `json:"context,omitempty"`
	From      string          `json:"from"`
	ID        string          `json:"id"`
	Timestamp string          `json:"timestamp"`
	Type      string          `json:"type"`
	Text      *inboundText    `json:"text,omitempty"`
	Button    *inboundButton  `json:"button,omitempty"`
}

type inboundContext struct {
	From string `json:"from"`
	ID   string `json:"id"`
}

type inboundText struct {
	Body string `json:"body"`
}

type inboundButton struct {
	Payload string `json:"payload"`
	Text    string `json:"text"`
}

// SendInbound simulates a user writing text to a business number: it opens
// the user's 24-hour customer-service window on that number, then POSTs the
// signed inbound webhook to the number's WebhookURL and waits for the
// answer. from is the user's phone number (digits, with or without "+").
// It returns the message's wamid, and an error wrapping ErrWebhookRejected
// if the webhook did not answer 200 (the window is open all the same: the
// user did write).
func (s *Sim) SendInbound(ctx context.Context, phoneNumberID, from, text string) (string, error) {
	if text == "" || utf8.RuneCountInString(text) > maxTextBody {
		return "", fmt.Errorf("sending inbound text: text must be 1 to %d characters", maxTextBody)
	}
	return s.sendInbound(ctx, phoneNumberID, from, func(m *inboundJSON) {
		m.Type = "text"
		m.Text = &inboundText{Body: text}
	})
}

// SendInboundButton simulates a user tapping a quick-reply button of a
// template message: an inbound message of type "button" with the button's
// payload and text, in reply to contextWAMID (the template message's
// wamid, may be empty). Like SendInbound it opens the service window.
func (s *Sim) SendInboundButton(ctx context.Context, phoneNumberID, from, contextWAMID, payload, text string) (string, error) {
	if text == "" {
		return "", errors.New("sending inbound button: text is required")
	}
	return s.sendInbound(ctx, phoneNumberID, from, func(m *inboundJSON) {
		m.Type = "button"
		m.Button = &inboundButton{Payload: payload, Text: text}
		if contextWAMID != "" {
			m.Context = &inboundContext{From: s.numbers[phoneNumberID].DisplayPhoneNumber, ID: contextWAMID}
		}
	})
}

func (s *Sim) sendInbound(ctx context.Context, phoneNumberID, from string, fill func(*inboundJSON)) (string, error) {
	n := s.numbers[phoneNumberID]
	if n == nil {
		return "", fmt.Errorf("sending inbound to %s: %w", phoneNumberID, ErrUnknownNumber)
	}
	waID, ok := normalizeWAID(from)
	if !ok {
		return "", fmt.Errorf("sending inbound: from %q is not a phone number", from)
	}
	if n.WebhookURL == "" {
		return "", fmt.Errorf("sending inbound to %s: %w", phoneNumberID, ErrNoWebhook)
	}
	now := s.now()
	s.limits.openWindow(n.PhoneNumberID, waID, now)
	m := inboundJSON{From: waID, ID: s.newWAMID(waID), Timestamp: strconv.FormatInt(now.Unix(), 10)}
	fill(&m)
	body, err := json.Marshal(s.envelope(n, webhookValue{
		Contacts: []contactJSON{{Profile: profileJSON{Name: "User " + waID[len(waID)-4:]}, WAID: waID}},
		Messages: []inboundJSON{m},
	}))
	if err != nil {
		return "", fmt.Errorf("encoding inbound webhook: %w", err)
	}
	if err := s.post(ctx, n, body); err != nil {
		s.count(func(st *Stats) { st.WebhooksFailed++ })
		return m.ID, fmt.Errorf("sending inbound to %s: %w", phoneNumberID, err)
	}
	s.count(func(st *Stats) {
		st.WebhooksSent++
		st.Inbound++
	})
	return m.ID, nil
}
