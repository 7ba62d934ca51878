package fcmsim

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func newSim(t *testing.T, cfg Config) (*Sim, *httptest.Server) {
	t.Helper()
	if cfg.Projects == nil {
		cfg.Projects = []Project{{ID: "shop-app", AccessToken: "tok-shop"}, {ID: "news-app", AccessToken: "tok-news"}}
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return s, srv
}

type answer struct {
	status     int
	retryAfter string
	Name       string `json:"name"`
	Error      *struct {
		Code    int    `json:"code"`
		Status  string `json:"status"`
		Details []struct {
			Type      string `json:"@type"`
			ErrorCode string `json:"errorCode"`
		} `json:"details"`
	} `json:"error"`
}

func (a answer) code() string {
	if a.Error == nil {
		return ""
	}
	for _, d := range a.Error.Details {
		return d.ErrorCode
	}
	return a.Error.Status
}

func post(t *testing.T, srv *httptest.Server, project, token, body string) answer {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/v1/projects/"+project+"/messages:send", strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a answer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatalf("answer is not JSON: %v", err)
	}
	a.status, a.retryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
	return a
}

const msg = `{"message":{"token":"device-1","notification":{"title":"Hi","body":"Sushi -20%"},"data":{"k":"v"}}}`

func TestSend(t *testing.T) {
	s, srv := newSim(t, Config{})
	a := post(t, srv, "shop-app", "tok-shop", msg)
	if a.status != 200 || !strings.HasPrefix(a.Name, "projects/shop-app/messages/") {
		t.Fatalf("answer %+v", a)
	}
	m := s.Messages()
	if len(m) != 1 || m[0].Token != "device-1" || m[0].Title != "Hi" || m[0].Body != "Sushi -20%" || m[0].Data["k"] != "v" || m[0].Name != a.Name {
		t.Fatalf("stored %+v", m)
	}
}

func TestRefusals(t *testing.T) {
	s, srv := newSim(t, Config{})
	s.Unregister("gone")
	s.Script("flaky", Fault{ErrorCode: ErrUnavailable, RetryAfter: 3})
	f := func(name, project, token, body string, status int, code string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			a := post(t, srv, project, token, body)
			if a.status != status || a.code() != code {
				t.Fatalf("got %d %q, want %d %q", a.status, a.code(), status, code)
			}
		})
	}
	f("no token", "shop-app", "", msg, 401, "UNAUTHENTICATED")
	f("bad token", "shop-app", "nope", msg, 401, "UNAUTHENTICATED")
	f("other project's token", "shop-app", "tok-news", msg, 403, ErrSenderIDMismatch)
	f("unknown project", "ghost", "tok-shop", msg, 404, "NOT_FOUND")
	f("unknown field", "shop-app", "tok-shop", `{"message":{"token":"a","titel":"x"}}`, 400, ErrInvalidArgument)
	f("two targets", "shop-app", "tok-shop", `{"message":{"token":"a","topic":"news"}}`, 400, ErrInvalidArgument)
	f("reserved data key", "shop-app", "tok-shop", `{"message":{"token":"a","data":{"google.x":"1"}}}`, 400, ErrInvalidArgument)
	f("number in data", "shop-app", "tok-shop", `{"message":{"token":"a","data":{"n":1}}}`, 400, ErrInvalidArgument)
	f("unregistered", "shop-app", "tok-shop", strings.Replace(msg, "device-1", "gone", 1), 404, ErrUnregistered)
	f("scripted", "shop-app", "tok-shop", strings.Replace(msg, "device-1", "flaky", 1), 503, ErrUnavailable)
	f("script used up", "shop-app", "tok-shop", strings.Replace(msg, "device-1", "flaky", 1), 200, "")
	if st := s.Stats(); st.Accepted != 1 || st.Refused[ErrUnregistered] != 1 || st.Refused[ErrInvalidArgument] != 4 {
		t.Fatalf("stats %+v", st)
	}
}

func TestQuota(t *testing.T) {
	s, srv := newSim(t, Config{QuotaPerSecond: 2})
	sec := int64(1_800_000_000)
	s.now = func() time.Time { return time.Unix(sec, 0) }
	for i := range 3 {
		a := post(t, srv, "shop-app", "tok-shop", msg)
		if i < 2 && a.status != 200 {
			t.Fatalf("send %d: %+v", i, a)
		}
		if i == 2 && (a.status != 429 || a.code() != ErrQuotaExceeded || a.retryAfter != "1") {
			t.Fatalf("over quota: %d %q Retry-After %q", a.status, a.code(), a.retryAfter)
		}
	}
	sec++
	if a := post(t, srv, "shop-app", "tok-shop", msg); a.status != 200 {
		t.Fatalf("next second: %+v", a)
	}
}
