package smtpsim

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/smtp"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := Start(cfg, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// dial connects net/smtp (the standard library's client, independent of
// Herald's) to s.
func dial(t *testing.T, s *Server) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func tlsConfig(t *testing.T, s *Server) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CertPEM()) {
		t.Fatal("certificate PEM does not parse")
	}
	return &tls.Config{RootCAs: pool, ServerName: "localhost"}
}

// code is the SMTP reply code of err, 0 if it is not a reply.
func code(err error) int {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

func send(c *smtp.Client, from, to, body string) error {
	if err := c.Mail(from); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, body); err != nil {
		return err
	}
	return w.Close()
}

const body = "From: a@x.example\r\nTo: b@y.example\r\nSubject: hi\r\n\r\nline one\r\n.leading dot\r\n"

func TestSendStartTLSAuthPlain(t *testing.T) {
	s := start(t, Config{Users: map[string]string{"app": "secret"}})
	c := dial(t, s)
	if ok, _ := c.Extension("AUTH"); ok {
		t.Fatal("AUTH offered before STARTTLS")
	}
	if err := c.StartTLS(tlsConfig(t, s)); err != nil {
		t.Fatal(err)
	}
	if ok, mechs := c.Extension("AUTH"); !ok || !strings.Contains(mechs, "PLAIN") || !strings.Contains(mechs, "LOGIN") {
		t.Fatalf("AUTH after STARTTLS: %v %q", ok, mechs)
	}
	if err := c.Auth(smtp.PlainAuth("", "app", "secret", "127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	if err := send(c, "a@x.example", "b@y.example", body); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	msgs, err := s.WaitMessages(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if m.From != "a@x.example" || len(m.To) != 1 || m.To[0] != "b@y.example" || !m.TLS || m.User != "app" {
		t.Fatalf("stored %+v", m)
	}
	if string(m.Data) != body {
		t.Fatalf("data %q, want %q (dot unstuffed, CRLF kept)", m.Data, body)
	}
	pm, err := m.Parse()
	if err != nil || pm.Header.Get("Subject") != "hi" {
		t.Fatalf("parsed %v %v", pm, err)
	}
	st := s.Stats()
	if st.Connections != 1 || st.TLSHandshakes != 1 || st.AuthOK != 1 || st.Messages != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// loginAuth is AUTH LOGIN, which net/smtp lacks.
type loginAuth struct{ user, pass string }

func (a loginAuth) Start(*smtp.ServerInfo) (string, []byte, error) { return "LOGIN", nil, nil }
func (a loginAuth) Next(from []byte, more bool) ([]byte, error) {
	if !more {
		return nil, nil
	}
	switch string(from) {
	case "Username:":
		return []byte(a.user), nil
	case "Password:":
		return []byte(a.pass), nil
	}
	return nil, errors.New("unexpected challenge " + string(from))
}

func TestAuthLoginAndFailures(t *testing.T) {
	s := start(t, Config{Users: map[string]string{"app": "secret"}})

	c := dial(t, s)
	if err := c.StartTLS(tlsConfig(t, s)); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(loginAuth{"app", "secret"}); err != nil {
		t.Fatalf("AUTH LOGIN: %v", err)
	}

	c2 := dial(t, s)
	if err := c2.StartTLS(tlsConfig(t, s)); err != nil {
		t.Fatal(err)
	}
	if err := c2.Auth(smtp.PlainAuth("", "app", "wrong", "127.0.0.1")); code(err) != 535 {
		t.Fatalf("wrong password: %v, want 535", err)
	}
	c3 := dial(t, s)
	if err := c3.StartTLS(tlsConfig(t, s)); err != nil {
		t.Fatal(err)
	}
	if err := c3.Mail("a@x.example"); code(err) != 530 {
		t.Fatalf("MAIL without AUTH: %v, want 530", err)
	}
	if st := s.Stats(); st.AuthOK != 1 || st.AuthFailed != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPlainRefused(t *testing.T) {
	s := start(t, Config{})
	c := dial(t, s)
	if err := c.Mail("a@x.example"); code(err) != 530 {
		t.Fatalf("MAIL before STARTTLS: %v, want 530", err)
	}

	open := start(t, Config{AllowPlain: true})
	c2 := dial(t, open)
	if err := send(c2, "a@x.example", "b@y.example", body); err != nil {
		t.Fatalf("AllowPlain: %v", err)
	}
	if m := open.Messages(); len(m) != 1 || m[0].TLS {
		t.Fatalf("stored %+v", m)
	}
}

func TestFaults(t *testing.T) {
	s := start(t, Config{AllowPlain: true})
	s.Script("bounce@y.example", Fault{Stage: StageRcpt, Code: 550, Text: "5.1.1 No such user"})
	s.Script("later@y.example", Fault{Stage: StageData, Code: 451}, Fault{Stage: StageData, Code: 452})
	s.Script("drop@y.example", Fault{Stage: StageData, Drop: true})

	c := dial(t, s)
	err := send(c, "a@x.example", "bounce@y.example", body)
	if code(err) != 550 || !strings.Contains(err.Error(), "5.1.1") {
		t.Fatalf("scripted RCPT: %v", err)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := send(c, "a@x.example", "bounce@y.example", body); err != nil {
		t.Fatalf("after the fault was used up: %v", err)
	}
	for _, want := range []int{451, 452} {
		if err := send(c, "a@x.example", "later@y.example", body); code(err) != want {
			t.Fatalf("scripted DATA: %v, want %d", err, want)
		}
	}
	if err := send(c, "a@x.example", "later@y.example", body); err != nil {
		t.Fatal(err)
	}
	err = send(c, "a@x.example", "drop@y.example", body)
	if err == nil || code(err) != 0 {
		t.Fatalf("dropped DATA: %v, want a connection error", err)
	}
	st := s.Stats()
	if st.Messages != 2 || st.Rejected != 3 || st.Dropped != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestLimits(t *testing.T) {
	s := start(t, Config{AllowPlain: true, MaxMessageBytes: 100, MaxRecipients: 1})
	c := dial(t, s)
	if err := send(c, "a@x.example", "b@y.example", strings.Repeat("x", 200)+"\r\n"); code(err) != 552 {
		t.Fatalf("big message: %v, want 552", err)
	}
	if err := c.Mail("a@x.example"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("b@y.example"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("c@y.example"); code(err) != 452 {
		t.Fatalf("second recipient: %v, want 452", err)
	}
	if len(s.Messages()) != 0 {
		t.Fatal("a refused message was stored")
	}
}

func TestImplicitTLS(t *testing.T) {
	s := start(t, Config{ImplicitTLS: true, Users: map[string]string{"app": "secret"}})
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", s.Addr(), tlsConfig(t, s))
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.NewClient(conn, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if err := c.Auth(smtp.PlainAuth("", "app", "secret", "localhost")); err != nil {
		t.Fatal(err)
	}
	if err := send(c, "a@x.example", "b@y.example", body); err != nil {
		t.Fatal(err)
	}
	if m := s.Messages(); len(m) != 1 || !m[0].TLS {
		t.Fatalf("stored %+v", m)
	}
}
