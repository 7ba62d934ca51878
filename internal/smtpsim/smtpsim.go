// Package smtpsim is an in-process SMTP submission server for tests and
// `herald dev`: it speaks enough ESMTP (RFC 5321) for a real client, with
// STARTTLS (RFC 3207) on a generated self-signed certificate and AUTH PLAIN
// and LOGIN (RFC 4954), over real TCP; it keeps the messages it accepts for
// assertions and injects faults on request.
//
// Commands: EHLO, HELO, STARTTLS, AUTH PLAIN, AUTH LOGIN, MAIL FROM (SIZE
// parameter checked), RCPT TO, DATA, RSET, NOOP, VRFY (252), QUIT. EHLO
// advertises SIZE, 8BITMIME, ENHANCEDSTATUSCODES, STARTTLS before TLS, and
// AUTH PLAIN LOGIN once TLS is up (or at once with Config.AllowPlain).
// Replies carry enhanced status codes.
//
// Rules, as a submission server enforces them:
//   - MAIL before STARTTLS is refused with 530 5.7.0 unless
//     Config.AllowPlain; so is AUTH (538 5.7.11).
//   - With Config.Users set, MAIL before a successful AUTH is refused with
//     530 5.7.0, and a wrong password gets 535 5.7.8.
//   - A message over Config.MaxMessageBytes gets 552 5.3.4; more than
//     Config.MaxRecipients recipients 452 4.5.3.
//
// Faults (Server.Script) are per recipient and consumed in order: the reply
// to RCPT TO or to the end of DATA is replaced by the scripted code, or the
// connection is dropped without a reply. A message is stored only when its
// DATA was answered 250.
//
// Usage:
//
//	srv, err := smtpsim.Start(smtpsim.Config{Users: map[string]string{"app": "secret"}}, "127.0.0.1:0", log)
//	defer srv.Close()
//	// client: STARTTLS trusting srv.CertPEM(), AUTH as app/secret, send to srv.Addr()
//	msgs, err := srv.WaitMessages(ctx, 1)
package smtpsim

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/mail"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config of a Server. The zero value is usable: STARTTLS required, no AUTH.
type Config struct {
	// Hostname is the server's name in its greeting and certificate.
	// Default "localhost".
	Hostname string
	// Users maps usernames to passwords. When set, AUTH is offered (after
	// STARTTLS) and required before MAIL. Default: no AUTH.
	Users map[string]string
	// AllowPlain accepts AUTH and MAIL without STARTTLS. Default false.
	AllowPlain bool
	// ImplicitTLS serves TLS from the first byte (port 465 style) instead
	// of offering STARTTLS. Default false.
	ImplicitTLS bool
	// DisableSTARTTLS offers no STARTTLS (an old relay, or a downgrade by
	// someone in between); use with AllowPlain. Default false.
	DisableSTARTTLS bool
	// MaxMessageBytes is the SIZE advertised and enforced. Default 10 MiB.
	MaxMessageBytes int
	// MaxRecipients per message. Default 100.
	MaxRecipients int
	// CommandTimeout bounds the wait for each command line and each DATA
	// body. Default 1 minute.
	CommandTimeout time.Duration
	// MaxStored is how many messages are kept, the oldest dropped first
	// (Stats.Messages still counts them all). Default 10,000.
	MaxStored int
}

func (c *Config) validate() error {
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	if strings.ContainsAny(c.Hostname, " \r\n") {
		return errors.New("smtpsim: hostname must be one word")
	}
	if c.MaxMessageBytes < 0 || c.MaxRecipients < 0 || c.CommandTimeout < 0 || c.MaxStored < 0 {
		return errors.New("smtpsim: limits must not be negative")
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 10 << 20
	}
	if c.MaxRecipients == 0 {
		c.MaxRecipients = 100
	}
	if c.CommandTimeout == 0 {
		c.CommandTimeout = time.Minute
	}
	if c.MaxStored == 0 {
		c.MaxStored = 10_000
	}
	return nil
}

// Message is a message the server accepted.
type Message struct {
	// From is the MAIL FROM address, To the RCPT TO addresses.
	From string
	To   []string
	// Data is the message as received, dot-unstuffed, CRLF line ends.
	Data []byte
	// TLS says whether the session was encrypted, User who authenticated
	// ("" without AUTH).
	TLS  bool
	User string
	// QueueID is the id given in the 250 reply to DATA.
	QueueID  string
	Received time.Time
}

// Parse parses Data as an RFC 5322 message.
func (m *Message) Parse() (*mail.Message, error) {
	return mail.ReadMessage(bytes.NewReader(m.Data))
}

// Fault stages.
const (
	// StageRcpt replaces the reply to RCPT TO of the recipient.
	StageRcpt = "rcpt"
	// StageData replaces the reply to the end of DATA of a message to the
	// recipient (the message is then not stored).
	StageData = "data"
)

// Fault is one scripted reply.
type Fault struct {
	// Stage is StageRcpt or StageData.
	Stage string
	// Code is the reply code (421, 450, 451, 452, 550, 552, 554, ...)
	// and Text its text, enhanced status code included
	// ("5.1.1 No such user"); a default text is used when empty.
	Code int
	Text string
	// Drop closes the connection instead of replying.
	Drop bool
}

// Stats counts what the server did.
type Stats struct {
	Connections   int
	TLSHandshakes int
	AuthOK        int
	AuthFailed    int
	// Messages is how many messages were accepted (250 to DATA).
	Messages int
	// Rejected is how many replies of 400 or more were sent to RCPT and
	// DATA (scripted or by rule); Dropped how many connections were
	// closed by a fault.
	Rejected int
	Dropped  int
}

// Server is a running SMTP server.
type Server struct {
	cfg     Config
	log     *slog.Logger
	ln      net.Listener
	tlsConf *tls.Config
	certPEM []byte

	mu      sync.Mutex
	stored  []Message
	stats   Stats
	scripts map[string][]Fault
	changed chan struct{}
	conns   map[net.Conn]struct{}
	seq     int
	closed  bool

	wg sync.WaitGroup
}

// Start listens on addr ("127.0.0.1:0" for a free port) and serves until
// Close. log may be nil.
func Start(cfg Config, addr string, log *slog.Logger) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cert, certPEM, err := selfSigned(cfg.Hostname)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("smtpsim: listening on %s: %w", addr, err)
	}
	s := &Server{
		cfg: cfg, log: log, ln: ln, certPEM: certPEM,
		tlsConf: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		scripts: make(map[string][]Fault),
		changed: make(chan struct{}),
		conns:   make(map[net.Conn]struct{}),
	}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Addr is the host:port the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// CertPEM is the server's self-signed certificate, PEM: trust it to verify
// STARTTLS.
func (s *Server) CertPEM() []byte { return s.certPEM }

// Close stops listening, closes every connection and waits for them.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	_ = s.ln.Close()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// CloseConnections closes every open connection, as a server does with
// sessions idle too long; the server keeps listening.
func (s *Server) CloseConnections() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.Close()
	}
}

// Script queues faults for messages to rcpt (compared case-insensitively),
// consumed in order, each by the first event of its stage.
func (s *Server) Script(rcpt string, faults ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := strings.ToLower(rcpt)
	s.scripts[k] = append(s.scripts[k], faults...)
}

// Messages returns a copy of the stored messages, oldest first.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.stored...)
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// WaitMessages waits until at least n messages are stored, or ctx ends
// (then it returns the messages so far and ctx's error).
func (s *Server) WaitMessages(ctx context.Context, n int) ([]Message, error) {
	for {
		s.mu.Lock()
		if len(s.stored) >= n {
			out := append([]Message(nil), s.stored...)
			s.mu.Unlock()
			return out, nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return s.Messages(), ctx.Err()
		}
	}
}

// nextFault pops the first fault of stage for any of rcpts.
func (s *Server) nextFault(stage string, rcpts ...string) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range rcpts {
		k := strings.ToLower(r)
		q := s.scripts[k]
		for i, f := range q {
			if f.Stage == stage {
				s.scripts[k] = append(q[:i:i], q[i+1:]...)
				return f, true
			}
		}
	}
	return Fault{}, false
}

func (s *Server) count(f func(*Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

func (s *Server) store(m Message) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	m.QueueID = fmt.Sprintf("SIM%08d", s.seq)
	s.stored = append(s.stored, m)
	if len(s.stored) > s.cfg.MaxStored {
		s.stored = append(s.stored[:0:0], s.stored[len(s.stored)-s.cfg.MaxStored:]...)
	}
	s.stats.Messages++
	close(s.changed)
	s.changed = make(chan struct{})
	return m.QueueID
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return // closed
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.stats.Connections++
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				_ = c.Close()
			}()
			s.serve(c)
		}()
	}
}

// session is one connection's state.
type session struct {
	srv  *Server
	raw  net.Conn
	tp   *textproto.Conn
	tls  bool
	helo bool
	user string

	from  string
	inTx  bool
	rcpts []string
}

// errDrop ends a session without a reply (a fault).
var errDrop = errors.New("connection dropped by fault")

func (s *Server) serve(c net.Conn) {
	ss := &session{srv: s, raw: c}
	if s.cfg.ImplicitTLS {
		tc := tls.Server(c, s.tlsConf)
		_ = c.SetDeadline(time.Now().Add(s.cfg.CommandTimeout))
		if err := tc.Handshake(); err != nil {
			return
		}
		s.count(func(st *Stats) { st.TLSHandshakes++ })
		ss.tls = true
		ss.tp = textproto.NewConn(tc)
	} else {
		ss.tp = textproto.NewConn(c)
	}
	if err := ss.reply(220, s.cfg.Hostname+" ESMTP smtpsim ready"); err != nil {
		return
	}
	for {
		_ = c.SetDeadline(time.Now().Add(s.cfg.CommandTimeout))
		line, err := ss.tp.ReadLine()
		if err != nil {
			return
		}
		quit, err := ss.command(line)
		if err != nil {
			if errors.Is(err, errDrop) {
				s.count(func(st *Stats) { st.Dropped++ })
			}
			return
		}
		if quit {
			return
		}
	}
}

// reply writes one reply; lines after the first are continuation lines.
func (ss *session) reply(code int, lines ...string) error {
	for i, l := range lines {
		sep := " "
		if i < len(lines)-1 {
			sep = "-"
		}
		if err := ss.tp.PrintfLine("%d%s%s", code, sep, l); err != nil {
			return err
		}
	}
	return nil
}

// reject replies a code of 400 or more and counts it.
func (ss *session) reject(code int, text string) error {
	ss.srv.count(func(st *Stats) { st.Rejected++ })
	return ss.reply(code, text)
}

// command handles one command line; quit is true after QUIT.
func (ss *session) command(line string) (quit bool, err error) {
	verb, arg, _ := strings.Cut(line, " ")
	verb = strings.ToUpper(verb)
	switch verb {
	case "EHLO", "HELO":
		if arg == "" {
			return false, ss.reply(501, "5.5.4 "+verb+" requires a domain")
		}
		ss.helo = true
		ss.resetTx()
		if verb == "HELO" {
			return false, ss.reply(250, ss.srv.cfg.Hostname)
		}
		return false, ss.reply(250, ss.ehloLines()...)
	case "STARTTLS":
		return false, ss.startTLS()
	case "AUTH":
		return false, ss.auth(arg)
	case "MAIL":
		return false, ss.mail(arg)
	case "RCPT":
		return false, ss.rcpt(arg)
	case "DATA":
		return false, ss.data()
	case "RSET":
		ss.resetTx()
		return false, ss.reply(250, "2.0.0 Ok")
	case "NOOP":
		return false, ss.reply(250, "2.0.0 Ok")
	case "VRFY":
		return false, ss.reply(252, "2.5.0 Cannot VRFY user, but will accept message")
	case "QUIT":
		_ = ss.reply(221, "2.0.0 Bye")
		return true, nil
	}
	return false, ss.reply(502, "5.5.2 Command not recognized")
}

func (ss *session) ehloLines() []string {
	cfg := &ss.srv.cfg
	lines := []string{cfg.Hostname + " greets you", "SIZE " + strconv.Itoa(cfg.MaxMessageBytes), "8BITMIME", "ENHANCEDSTATUSCODES"}
	if !ss.tls && !cfg.DisableSTARTTLS {
		lines = append(lines, "STARTTLS")
	}
	if len(cfg.Users) > 0 && (ss.tls || cfg.AllowPlain) {
		lines = append(lines, "AUTH PLAIN LOGIN")
	}
	return lines
}

func (ss *session) resetTx() {
	ss.from, ss.inTx, ss.rcpts = "", false, nil
}

func (ss *session) startTLS() error {
	if ss.tls {
		return ss.reply(503, "5.5.1 TLS already active")
	}
	if ss.srv.cfg.DisableSTARTTLS {
		return ss.reply(502, "5.5.2 Command not recognized")
	}
	if err := ss.reply(220, "2.0.0 Ready to start TLS"); err != nil {
		return err
	}
	tc := tls.Server(ss.raw, ss.srv.tlsConf)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("tls handshake: %w", err)
	}
	ss.srv.count(func(st *Stats) { st.TLSHandshakes++ })
	// RFC 3207: the client starts over with EHLO; nothing said before
	// the handshake counts.
	ss.tp = textproto.NewConn(tc)
	ss.tls, ss.helo, ss.user = true, false, ""
	ss.resetTx()
	return nil
}

func (ss *session) auth(arg string) error {
	cfg := &ss.srv.cfg
	switch {
	case !ss.helo:
		return ss.reply(503, "5.5.1 EHLO first")
	case len(cfg.Users) == 0:
		return ss.reply(502, "5.5.2 AUTH not offered")
	case !ss.tls && !cfg.AllowPlain:
		return ss.reply(538, "5.7.11 Encryption required for requested authentication mechanism")
	case ss.user != "":
		return ss.reply(503, "5.5.1 Already authenticated")
	case ss.inTx:
		return ss.reply(503, "5.5.1 AUTH not allowed during a mail transaction")
	}
	mech, initial, _ := strings.Cut(arg, " ")
	var user, pass string
	switch strings.ToUpper(mech) {
	case "PLAIN":
		resp := initial
		if resp == "" {
			var err error
			if resp, err = ss.challenge(""); err != nil {
				return err
			}
		}
		b, err := decodeAuth(resp)
		if err != nil {
			return ss.reply(501, "5.5.2 Cannot decode response")
		}
		parts := strings.Split(string(b), "\x00")
		if len(parts) != 3 {
			return ss.reply(501, "5.5.2 PLAIN response is authzid NUL authcid NUL password")
		}
		user, pass = parts[1], parts[2]
	case "LOGIN":
		u, err := ss.challenge(base64.StdEncoding.EncodeToString([]byte("Username:")))
		if err != nil {
			return err
		}
		ub, err := decodeAuth(u)
		if err != nil {
			return ss.reply(501, "5.5.2 Cannot decode response")
		}
		p, err := ss.challenge(base64.StdEncoding.EncodeToString([]byte("Password:")))
		if err != nil {
			return err
		}
		pb, err := decodeAuth(p)
		if err != nil {
			return ss.reply(501, "5.5.2 Cannot decode response")
		}
		user, pass = string(ub), string(pb)
	default:
		return ss.reply(504, "5.5.4 Unrecognized authentication type")
	}
	if want, ok := cfg.Users[user]; !ok || want != pass {
		ss.srv.count(func(st *Stats) { st.AuthFailed++ })
		return ss.reply(535, "5.7.8 Authentication credentials invalid")
	}
	ss.user = user
	ss.srv.count(func(st *Stats) { st.AuthOK++ })
	return ss.reply(235, "2.7.0 Authentication successful")
}

// errCancelled is a client's "*" during AUTH.
var errCancelled = errors.New("authentication cancelled")

// challenge sends a 334 and reads the client's answer.
func (ss *session) challenge(text string) (string, error) {
	if err := ss.reply(334, text); err != nil {
		return "", err
	}
	line, err := ss.tp.ReadLine()
	if err != nil {
		return "", err
	}
	if line == "*" {
		_ = ss.reply(501, "5.0.0 Authentication cancelled")
		return "", errCancelled
	}
	return line, nil
}

func decodeAuth(s string) ([]byte, error) {
	if s == "=" {
		return nil, nil
	}
	return base64.StdEncoding.DecodeString(s)
}

// path parses "FROM:<addr> params" or "TO:<addr> params".
func path(arg, prefix string) (addr string, params []string, ok bool) {
	if len(arg) < len(prefix) || !strings.EqualFold(arg[:len(prefix)], prefix) {
		return "", nil, false
	}
	rest := strings.TrimLeft(arg[len(prefix):], " ")
	if !strings.HasPrefix(rest, "<") {
		return "", nil, false
	}
	end := strings.IndexByte(rest, '>')
	if end < 0 {
		return "", nil, false
	}
	return rest[1:end], strings.Fields(rest[end+1:]), true
}

func (ss *session) mail(arg string) error {
	cfg := &ss.srv.cfg
	switch {
	case !ss.helo:
		return ss.reply(503, "5.5.1 EHLO first")
	case !ss.tls && !cfg.AllowPlain:
		return ss.reject(530, "5.7.0 Must issue a STARTTLS command first")
	case len(cfg.Users) > 0 && ss.user == "":
		return ss.reject(530, "5.7.0 Authentication required")
	case ss.inTx:
		return ss.reply(503, "5.5.1 Nested MAIL command")
	}
	addr, params, ok := path(arg, "FROM:")
	if !ok {
		return ss.reply(501, "5.5.4 Syntax: MAIL FROM:<address>")
	}
	for _, p := range params {
		k, v, _ := strings.Cut(p, "=")
		if strings.EqualFold(k, "SIZE") {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return ss.reply(501, "5.5.4 Bad SIZE parameter")
			}
			if n > cfg.MaxMessageBytes {
				return ss.reject(552, "5.3.4 Message size exceeds fixed limit")
			}
		}
	}
	ss.from, ss.inTx = addr, true
	return ss.reply(250, "2.1.0 Ok")
}

func (ss *session) rcpt(arg string) error {
	if !ss.inTx {
		return ss.reply(503, "5.5.1 Need MAIL before RCPT")
	}
	addr, _, ok := path(arg, "TO:")
	if !ok || addr == "" {
		return ss.reply(501, "5.5.4 Syntax: RCPT TO:<address>")
	}
	if f, ok := ss.srv.nextFault(StageRcpt, addr); ok {
		return ss.fault(f)
	}
	if len(ss.rcpts) >= ss.srv.cfg.MaxRecipients {
		return ss.reject(452, "4.5.3 Too many recipients")
	}
	ss.rcpts = append(ss.rcpts, addr)
	return ss.reply(250, "2.1.5 Ok")
}

func (ss *session) data() error {
	if !ss.inTx || len(ss.rcpts) == 0 {
		return ss.reply(503, "5.5.1 Need RCPT before DATA")
	}
	if err := ss.reply(354, "End data with <CR><LF>.<CR><LF>"); err != nil {
		return err
	}
	max := ss.srv.cfg.MaxMessageBytes
	_ = ss.raw.SetDeadline(time.Now().Add(ss.srv.cfg.CommandTimeout))
	var buf bytes.Buffer
	dr := ss.tp.DotReader()
	n, err := io.Copy(&buf, io.LimitReader(dr, int64(max)+1))
	if err != nil {
		return err
	}
	if n > int64(max) {
		// Read the rest up to the dot, then refuse.
		if _, err := io.Copy(io.Discard, dr); err != nil {
			return err
		}
		ss.resetTx()
		return ss.reject(552, "5.3.4 Message size exceeds fixed limit")
	}
	from, rcpts := ss.from, ss.rcpts
	ss.resetTx()
	if f, ok := ss.srv.nextFault(StageData, rcpts...); ok {
		return ss.fault(f)
	}
	// DotReader turns CRLF into LF; keep the wire's CRLF.
	data := bytes.ReplaceAll(buf.Bytes(), []byte("\n"), []byte("\r\n"))
	id := ss.srv.store(Message{From: from, To: rcpts, Data: data, TLS: ss.tls, User: ss.user, Received: time.Now()})
	return ss.reply(250, "2.0.0 Ok: queued as "+id)
}

// errClosing ends a session after a 421 reply, as RFC 5321 4.2.2 wants.
var errClosing = errors.New("closing after 421")

// fault answers with a scripted fault.
func (ss *session) fault(f Fault) error {
	if f.Drop {
		return errDrop
	}
	if err := ss.reject(f.Code, faultText(f)); err != nil {
		return err
	}
	if f.Code == 421 {
		return errClosing
	}
	return nil
}

func faultText(f Fault) string {
	if f.Text != "" {
		return f.Text
	}
	switch {
	case f.Code == 421:
		return "4.3.2 Service not available, closing channel"
	case f.Code >= 500:
		return "5.0.0 Rejected by fault injection"
	}
	return "4.0.0 Try again later"
}
