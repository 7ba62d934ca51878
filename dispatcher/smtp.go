package dispatcher

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/internal/apps"
)

// This file is a small SMTP submission client (RFC 5321, STARTTLS RFC 3207,
// AUTH PLAIN/LOGIN RFC 4954) on net/textproto, and the pool of its
// connections. It is written here rather than on net/smtp so that every
// failure is classified by where it happened: a reply (SMTPError, by code),
// a connection that failed before the message's final dot (nothing was
// delivered: ErrUnreachable, retried) or after it (ErrInDoubt).

// SMTP stages, SMTPError.Stage.
const (
	stageGreeting = "greeting"
	stageEHLO     = "ehlo"
	stageSTARTTLS = "starttls"
	stageAuth     = "auth"
	stageMail     = "mail"
	stageRcpt     = "rcpt"
	stageData     = "data"
	stageMessage  = "message" // the reply to the end of DATA
)

// smtpConn is one SMTP session, ready for MAIL.
type smtpConn struct {
	raw  net.Conn
	tp   *textproto.Conn
	ext  map[string]string
	used int
	// idleSince is when the connection went back to the pool.
	idleSince time.Time
}

// enhancedRE finds an enhanced status code (RFC 3463) at the start of a
// reply text.
var enhancedRE = regexp.MustCompile(`^([245]\.\d{1,3}\.\d{1,3})\s*`)

// replyError turns a reply into an SMTPError.
func replyError(stage string, code int, msg string) *SMTPError {
	msg = strings.ReplaceAll(msg, "\n", " ")
	e := &SMTPError{Stage: stage, Code: code, Message: msg}
	if m := enhancedRE.FindStringSubmatch(msg); m != nil {
		e.Enhanced = m[1]
		e.Message = strings.TrimSpace(msg[len(m[0]):])
	}
	if len(e.Message) > 200 {
		e.Message = e.Message[:200]
	}
	return e
}

// cmd sends one command and reads its reply, which must have code want
// (one of them when several are given). A reply of another code is an
// *SMTPError; a failure to write or read is returned as it is.
func (c *smtpConn) cmd(stage string, want []int, format string, args ...any) (string, error) {
	if err := c.tp.PrintfLine(format, args...); err != nil {
		return "", err
	}
	return c.reply(stage, want...)
}

func (c *smtpConn) reply(stage string, want ...int) (string, error) {
	code, msg, err := c.tp.ReadResponse(0)
	if err != nil {
		return "", err
	}
	for _, w := range want {
		if code == w {
			return msg, nil
		}
	}
	return "", replyError(stage, code, msg)
}

// ehlo greets and records the extensions.
func (c *smtpConn) ehlo(name string) error {
	msg, err := c.cmd(stageEHLO, []int{250}, "EHLO %s", name)
	if err != nil {
		return err
	}
	c.ext = make(map[string]string)
	lines := strings.Split(msg, "\n")
	for _, l := range lines[1:] { // the first line is the server's name
		k, v, _ := strings.Cut(l, " ")
		c.ext[strings.ToUpper(k)] = v
	}
	return nil
}

// smtpPool keeps the connections to one SMTP server (with one set of
// credentials): at most size are open, idle ones are reused for up to
// maxUses messages and idleTimeout of rest.
type smtpPool struct {
	srv         apps.SMTP
	tls         *tls.Config
	idleTimeout time.Duration
	maxUses     int
	dialer      net.Dialer

	slots chan struct{}
	mu    sync.Mutex
	idle  []*smtpConn
	// closed is set by close; connections returned after it are closed.
	closed bool
}

func newSMTPPool(srv apps.SMTP, size, maxUses int, idleTimeout time.Duration) (*smtpPool, error) {
	tc := &tls.Config{ServerName: srv.ServerName, MinVersion: tls.VersionTLS12}
	if len(srv.CAPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(srv.CAPEM) {
			return nil, fmt.Errorf("%w: email.smtp.ca_file of %s holds no PEM certificate", ErrSMTPConfig, srv)
		}
		tc.RootCAs = pool
	}
	return &smtpPool{
		srv: srv, tls: tc, idleTimeout: idleTimeout, maxUses: maxUses,
		slots: make(chan struct{}, size),
	}, nil
}

// poolKey identifies the pool of an app's SMTP settings: apps with the same
// server and credentials share connections.
func poolKey(s *apps.SMTP) string {
	h := sha256.New()
	for _, part := range []string{s.Addr, s.TLS, s.ServerName, s.HeloName, s.Username, s.Password, string(s.CAPEM)} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// get returns a connection ready for MAIL, waiting for a slot while size
// connections are busy. reused says it came from the idle list (and may
// have been closed by the server meanwhile).
func (p *smtpPool) get(ctx context.Context) (c *smtpConn, reused bool, err error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, false, fmt.Errorf("%w: waiting for a connection to %s: %w", ErrUnreachable, p.srv, ctx.Err())
	}
	now := time.Now()
	p.mu.Lock()
	var stale []*smtpConn
	fresh := p.idle[:0]
	for _, x := range p.idle {
		if now.Sub(x.idleSince) > p.idleTimeout {
			stale = append(stale, x)
		} else {
			fresh = append(fresh, x)
		}
	}
	clear(p.idle[len(fresh):])
	p.idle = fresh
	if n := len(p.idle); n > 0 { // the most recently used: the least likely to be timed out
		c = p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
	}
	p.mu.Unlock()
	for _, s := range stale {
		s.quit()
	}
	if c != nil {
		return c, true, nil
	}
	c, err = p.dial(ctx)
	if err != nil {
		<-p.slots
		return nil, false, err
	}
	return c, false, nil
}

// put returns c to the pool (healthy: usable for another message) or
// closes it, and frees its slot.
func (p *smtpPool) put(c *smtpConn, healthy bool) {
	defer func() { <-p.slots }()
	if !healthy || c.used >= p.maxUses {
		c.quit()
		return
	}
	c.idleSince = time.Now()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.quit()
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// close closes the idle connections; busy ones are closed when returned.
func (p *smtpPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, c := range idle {
		c.quit()
	}
}

// quit says QUIT (briefly) and closes.
func (c *smtpConn) quit() {
	_ = c.raw.SetDeadline(time.Now().Add(time.Second))
	if c.tp.PrintfLine("QUIT") == nil {
		_, _, _ = c.tp.ReadResponse(221)
	}
	_ = c.tp.Close()
}

// watch applies ctx's deadline and cancellation to the connection until
// the returned stop is called.
func watch(ctx context.Context, conn net.Conn) (stop func()) {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Time{}
	}
	_ = conn.SetDeadline(dl)
	cancel := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	return func() { cancel() }
}

// dial connects, greets, upgrades to TLS and authenticates. Every error
// wraps ErrUnreachable (nothing was sent: retry), ErrSMTPConfig (the server
// cannot be used as configured) or is an *SMTPError.
func (p *smtpPool) dial(ctx context.Context) (c *smtpConn, err error) {
	raw, err := p.dialer.DialContext(ctx, "tcp", p.srv.Addr)
	if err != nil {
		return nil, fmt.Errorf("%w: connecting to %s: %w", ErrUnreachable, p.srv, err)
	}
	stop := watch(ctx, raw)
	defer stop()
	defer func() {
		if err != nil {
			_ = raw.Close()
		}
	}()
	var conn net.Conn = raw
	if p.srv.TLS == apps.TLSImplicit {
		tc := tls.Client(raw, p.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("%w: tls handshake with %s: %w", ErrUnreachable, p.srv, err)
		}
		conn = tc
	}
	c = &smtpConn{raw: raw, tp: textproto.NewConn(conn)}
	if err := p.handshake(ctx, c); err != nil {
		var se *SMTPError
		if errors.As(err, &se) || errors.Is(err, ErrSMTPConfig) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: greeting %s: %w", ErrUnreachable, p.srv, err)
	}
	return c, nil
}

func (p *smtpPool) handshake(ctx context.Context, c *smtpConn) error {
	if _, err := c.reply(stageGreeting, 220); err != nil {
		return err
	}
	if err := c.ehlo(p.srv.HeloName); err != nil {
		return err
	}
	if p.srv.TLS == apps.TLSStartTLS {
		if _, ok := c.ext["STARTTLS"]; !ok {
			// Sending in clear text (credentials included) because the
			// server, or someone in between, did not offer TLS would
			// defeat the setting: refuse.
			return fmt.Errorf("%w: %s does not offer STARTTLS (set email.smtp.tls: none only for a local relay)", ErrSMTPConfig, p.srv)
		}
		if _, err := c.cmd(stageSTARTTLS, []int{220}, "STARTTLS"); err != nil {
			return err
		}
		tc := tls.Client(c.raw, p.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("tls handshake: %w", err)
		}
		c.tp = textproto.NewConn(tc)
		if err := c.ehlo(p.srv.HeloName); err != nil {
			return err
		}
	}
	if p.srv.Username == "" {
		return nil
	}
	return c.auth(p.srv)
}

// auth authenticates with PLAIN when offered, else LOGIN.
func (c *smtpConn) auth(srv apps.SMTP) error {
	mechs := strings.Fields(strings.ToUpper(c.ext["AUTH"]))
	has := func(m string) bool {
		for _, x := range mechs {
			if x == m {
				return true
			}
		}
		return false
	}
	enc := base64.StdEncoding.EncodeToString
	switch {
	case has("PLAIN"):
		_, err := c.cmd(stageAuth, []int{235}, "AUTH PLAIN %s", enc([]byte("\x00"+srv.Username+"\x00"+srv.Password)))
		return err
	case has("LOGIN"):
		if _, err := c.cmd(stageAuth, []int{334}, "AUTH LOGIN"); err != nil {
			return err
		}
		if _, err := c.cmd(stageAuth, []int{334}, "%s", enc([]byte(srv.Username))); err != nil {
			return err
		}
		_, err := c.cmd(stageAuth, []int{235}, "%s", enc([]byte(srv.Password)))
		return err
	}
	return fmt.Errorf("%w: %s offers no AUTH PLAIN or LOGIN (offers %q)", ErrSMTPConfig, srv, c.ext["AUTH"])
}

// sendMail runs one mail transaction. Errors: *SMTPError for a refusal
// (the connection stays usable after RSET unless the code is 421),
// ErrUnreachable when the connection failed before the final dot was
// written, ErrInDoubt when it failed after (the server may have queued the
// message).
func (c *smtpConn) sendMail(from, to string, msg []byte) (queued string, err error) {
	netErr := func(stage string, err error) error {
		return fmt.Errorf("%w: smtp %s: %w", ErrUnreachable, stage, err)
	}
	size := ""
	if _, ok := c.ext["SIZE"]; ok {
		size = " SIZE=" + strconv.Itoa(len(msg))
	}
	if _, err := c.cmd(stageMail, []int{250}, "MAIL FROM:<%s>%s", from, size); err != nil {
		if isReply(err) {
			return "", err
		}
		return "", fmt.Errorf("%w: %w", errFirstCommand, netErr(stageMail, err))
	}
	if _, err := c.cmd(stageRcpt, []int{250, 251}, "RCPT TO:<%s>", to); err != nil {
		if isReply(err) {
			return "", err
		}
		return "", netErr(stageRcpt, err)
	}
	if _, err := c.cmd(stageData, []int{354}, "DATA"); err != nil {
		if isReply(err) {
			return "", err
		}
		return "", netErr(stageData, err)
	}
	w := c.tp.DotWriter()
	if _, err := w.Write(msg); err != nil {
		return "", netErr(stageData, err)
	}
	if err := w.Close(); err != nil {
		// The final dot may or may not have reached the server.
		return "", fmt.Errorf("%w: smtp writing the end of data: %w", ErrInDoubt, err)
	}
	c.used++
	reply, err := c.reply(stageMessage, 250)
	if err != nil {
		if isReply(err) {
			return "", err
		}
		return "", fmt.Errorf("%w: smtp reading the reply to the message: %w", ErrInDoubt, err)
	}
	return reply, nil
}

// errFirstCommand marks a connection that failed at the first command of
// a transaction: on a reused connection, the sign of one the server closed
// while it was idle.
var errFirstCommand = errors.New("connection failed at MAIL")

// reset ends a refused transaction so that the connection can be reused.
func (c *smtpConn) reset() error {
	_, err := c.cmd("rset", []int{250}, "RSET")
	return err
}

func isReply(err error) bool {
	var se *SMTPError
	return errors.As(err, &se)
}
