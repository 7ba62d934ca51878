package wasim_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/heraldhq/herald/internal/wasim"
)

// Example runs the simulator in-process: a webhook endpoint standing in for
// Herald's ingest verifies signatures, a template message is sent through
// the Graph API endpoint, and its statuses come back by webhook.
func Example() {
	const secret = "app-secret"
	statuses := make(chan string, 8)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get(wasim.SignatureHeader) != wasim.Sign(secret, body) {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		var p struct {
			Entry []struct {
				Changes []struct {
					Value struct {
						Statuses []struct{ Status string } `json:"statuses"`
					} `json:"value"`
				} `json:"changes"`
			} `json:"entry"`
		}
		_ = json.Unmarshal(body, &p)
		for _, s := range p.Entry[0].Changes[0].Value.Statuses {
			statuses <- s.Status
		}
	}))
	defer hook.Close()

	sim, err := wasim.New(wasim.Config{
		Numbers: []wasim.Number{{
			PhoneNumberID: "1001", WABAID: "2001", AccessToken: "token",
			AppSecret: secret, WebhookURL: hook.URL,
		}},
		Templates:   wasim.DefaultTemplates(),
		StatusDelay: time.Millisecond,
	}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = sim.Run(ctx) }()
	api := httptest.NewServer(sim.Handler())
	defer api.Close()

	req, _ := http.NewRequest(http.MethodPost, api.URL+"/v23.0/1001/messages", strings.NewReader(`{
		"messaging_product": "whatsapp", "to": "+15551234567", "type": "template",
		"template": {"name": "promo_offer", "language": {"code": "en_US"},
			"components": [{"type": "body", "parameters": [{"type": "text", "text": "Ann"}]}]}}`))
	req.Header.Set("Authorization", "Bearer token")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	var out struct {
		Messages []struct {
			ID            string `json:"id"`
			MessageStatus string `json:"message_status"`
		} `json:"messages"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, out.Messages[0].MessageStatus, strings.HasPrefix(out.Messages[0].ID, "wamid."))
	for range 3 {
		fmt.Println(<-statuses)
	}
	// Output:
	// 200 accepted true
	// sent
	// delivered
	// read
}
