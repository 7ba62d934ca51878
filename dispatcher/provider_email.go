package dispatcher

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"html"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/track"
	"github.com/heraldhq/herald/schemas"
)

var (
	_ Provider = (*Email)(nil)
	_ preparer = (*Email)(nil)
)

// preparer is implemented by providers that check a request, and settle its
// sender, before the dispatcher waits for the breaker and the limiter:
// refusals cost no wait, and the breaker and bucket are those of the sender
// actually used.
type preparer interface {
	prepare(app *apps.App, req *schemas.DispatchRequest) error
}

// Email sends email over SMTP: the app's submission server (apps.Email),
// STARTTLS unless the app says otherwise, AUTH PLAIN or LOGIN, through a
// small pool of connections per server (EmailConfig.PoolSize), so that
// throughput is not one TCP and TLS handshake per message.
//
// The message is MIME: multipart/alternative with a text/plain and a
// text/html part (or one of them), quoted-printable, UTF-8, with From,
// To, Reply-To, Subject, Date, a Message-ID derived from the app and
// dispatch id (a re-sent request carries the same one, so receivers and
// Herald's own logs can tell), X-Herald-Dispatch-ID and, with tracking,
// List-Unsubscribe (RFC 2369, one-click RFC 8058). With tracking, every
// http(s) link of the HTML is replaced by a signed click link to ingest,
// and a signed open pixel is added.
//
// The provider id of an accepted message is its Message-ID.
type Email struct {
	cfg    EmailConfig
	signer *track.Signer // nil: no tracking
	now    func() time.Time

	mu     sync.Mutex
	pools  map[string]*smtpPool
	closed bool
}

// NewEmail returns the email provider. cfg must have been validated
// (Config.Validate).
func NewEmail(cfg EmailConfig) (*Email, error) {
	e := &Email{cfg: cfg, now: time.Now, pools: make(map[string]*smtpPool)}
	if cfg.TrackingURL != "" {
		s, err := track.NewSigner(cfg.TrackingKeys)
		if err != nil {
			return nil, fmt.Errorf("dispatcher: email tracking: %w", err)
		}
		e.signer = s
	}
	return e, nil
}

// Close closes the idle connections of every pool.
func (e *Email) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	for _, p := range e.pools {
		p.close()
	}
}

// prepare checks that app can send email, that req.Sender is one of its
// addresses (setting it to the default when empty) and that the message
// can be built.
func (e *Email) prepare(app *apps.App, req *schemas.DispatchRequest) error {
	if !app.Email.Enabled() {
		return fmt.Errorf("app %s has no email settings: %w", app.ID, ErrUnsupportedChannel)
	}
	from, ok := app.Email.Sender(req.Sender)
	if !ok {
		return fmt.Errorf("sender %q of app %s: %w", req.Sender, app.ID, ErrForeignSender)
	}
	req.Sender = from
	return checkEmail(req)
}

// checkEmail reports what makes req impossible to send as an email,
// wrapping ErrInvalidRequest.
func checkEmail(req *schemas.DispatchRequest) error {
	m := req.Email
	switch {
	case m == nil:
		return fmt.Errorf("%w: email is required", ErrInvalidRequest)
	case m.Subject == "":
		return fmt.Errorf("%w: email.subject is required", ErrInvalidRequest)
	case m.Text == "" && m.HTML == "":
		return fmt.Errorf("%w: email.text or email.html is required", ErrInvalidRequest)
	case strings.ContainsAny(m.Subject, "\r\n"):
		return fmt.Errorf("%w: email.subject must be one line", ErrInvalidRequest)
	case strings.ContainsAny(m.FromName, "\r\n"):
		return fmt.Errorf("%w: email.from_name must be one line", ErrInvalidRequest)
	}
	if err := plainAddress("to", req.To); err != nil {
		return err
	}
	if m.ReplyTo != "" {
		if err := plainAddress("email.reply_to", m.ReplyTo); err != nil {
			return err
		}
	}
	return nil
}

// plainAddress accepts one address without display name or brackets: what
// goes into RCPT TO and the headers.
func plainAddress(field, a string) error {
	p, err := mail.ParseAddress(a)
	if err != nil || p.Address != a || p.Name != "" {
		return fmt.Errorf("%w: %s %q is not a plain email address", ErrInvalidRequest, field, cut(a))
	}
	return nil
}

// Send builds the message and submits it through the app's server. Errors:
// ErrInvalidRequest, ErrUnsupportedChannel, ErrForeignSender (prepare),
// *SMTPError for refusals, ErrSMTPConfig, ErrUnreachable when nothing was
// delivered, ErrInDoubt when the server may have queued the message.
func (e *Email) Send(ctx context.Context, app *apps.App, req *schemas.DispatchRequest) (string, error) {
	if err := e.prepare(app, req); err != nil {
		return "", err
	}
	msgID := messageID(app.ID, req.ID, req.Sender)
	msg, err := e.build(app, req, msgID)
	if err != nil {
		return "", err
	}
	pool, err := e.pool(&app.Email.SMTP)
	if err != nil {
		return "", err
	}
	// A reused connection may have been closed by the server while idle:
	// if its first command (MAIL) fails on the wire, nothing was sent, and
	// one fresh connection is tried at once, within this attempt.
	for try := 0; ; try++ {
		c, reused, err := pool.get(ctx)
		if err != nil {
			return "", err
		}
		stop := watch(ctx, c.raw)
		_, err = c.sendMail(req.Sender, req.To, msg)
		stop()
		if err == nil {
			pool.put(c, true)
			return msgID, nil
		}
		var se *SMTPError
		if errors.As(err, &se) {
			// A refusal: the session is still fine after RSET, unless
			// the server is closing it.
			pool.put(c, se.Code != 421 && c.reset() == nil)
			return "", err
		}
		pool.put(c, false)
		if reused && try == 0 && errors.Is(err, errFirstCommand) && ctx.Err() == nil {
			continue
		}
		return "", err
	}
}

// pool returns the pool of an app's SMTP server, creating it.
func (e *Email) pool(srv *apps.SMTP) (*smtpPool, error) {
	key := poolKey(srv)
	e.mu.Lock()
	defer e.mu.Unlock()
	if p, ok := e.pools[key]; ok {
		return p, nil
	}
	if e.closed {
		return nil, fmt.Errorf("%w: email provider closed", ErrUnreachable)
	}
	p, err := newSMTPPool(*srv, e.cfg.PoolSize, e.cfg.MaxMessagesPerConn, e.cfg.IdleTimeout)
	if err != nil {
		return nil, err
	}
	e.pools[key] = p
	return p, nil
}

// messageID is <hex(sha256(app, dispatch id))[:32]@domain of from>: the
// same request always gets the same id, and the id reveals nothing.
func messageID(app, dispatchID, from string) string {
	h := sha256.Sum256([]byte(app + "\x00" + dispatchID))
	domain := "herald.invalid"
	if i := strings.LastIndexByte(from, '@'); i >= 0 && i < len(from)-1 {
		domain = from[i+1:]
	}
	return "<" + hex.EncodeToString(h[:16]) + "@" + domain + ">"
}

// build renders the whole message, CRLF line ends.
func (e *Email) build(app *apps.App, req *schemas.DispatchRequest, msgID string) ([]byte, error) {
	m := req.Email
	link := e.linkOf(app, req)
	var buf bytes.Buffer
	hdr := func(k, v string) { buf.WriteString(k + ": " + v + "\r\n") }
	fromName := app.Email.FromName
	if m.FromName != "" {
		fromName = m.FromName
	}
	hdr("From", (&mail.Address{Name: fromName, Address: req.Sender}).String())
	hdr("To", (&mail.Address{Address: req.To}).String())
	replyTo := app.Email.ReplyTo
	if m.ReplyTo != "" {
		replyTo = m.ReplyTo
	}
	if replyTo != "" {
		hdr("Reply-To", (&mail.Address{Address: replyTo}).String())
	}
	hdr("Subject", mime.QEncoding.Encode("utf-8", m.Subject))
	hdr("Date", e.now().Format(time.RFC1123Z))
	hdr("Message-ID", msgID)
	hdr("X-Herald-Dispatch-ID", mime.QEncoding.Encode("utf-8", req.ID))
	if unsub, err := e.listUnsubscribe(app, link); err != nil {
		return nil, err
	} else if unsub != "" {
		hdr("List-Unsubscribe", unsub)
		if e.signer != nil {
			hdr("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
		}
	}
	hdr("MIME-Version", "1.0")

	htmlBody := m.HTML
	if htmlBody != "" && e.signer != nil {
		var err error
		if htmlBody, err = e.rewriteHTML(htmlBody, link); err != nil {
			return nil, err
		}
	}
	switch {
	case m.Text != "" && htmlBody != "":
		mw := multipart.NewWriter(&buf)
		hdr("Content-Type", `multipart/alternative; boundary="`+mw.Boundary()+`"`)
		buf.WriteString("\r\n")
		for _, part := range []struct{ ctype, body string }{{"text/plain", m.Text}, {"text/html", htmlBody}} {
			w, err := mw.CreatePart(textproto.MIMEHeader{
				"Content-Type":              {part.ctype + "; charset=utf-8"},
				"Content-Transfer-Encoding": {"quoted-printable"},
			})
			if err != nil {
				return nil, fmt.Errorf("%w: building mime part: %v", ErrInvalidRequest, err)
			}
			if err := writeQP(w, part.body); err != nil {
				return nil, err
			}
		}
		if err := mw.Close(); err != nil {
			return nil, fmt.Errorf("%w: closing mime message: %v", ErrInvalidRequest, err)
		}
	default:
		ctype, body := "text/plain", m.Text
		if htmlBody != "" {
			ctype, body = "text/html", htmlBody
		}
		hdr("Content-Type", ctype+"; charset=utf-8")
		hdr("Content-Transfer-Encoding", "quoted-printable")
		buf.WriteString("\r\n")
		if err := writeQP(&buf, body); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// writeQP writes body quoted-printable with CRLF line ends.
func writeQP(w interface{ Write([]byte) (int, error) }, body string) error {
	body = strings.ReplaceAll(strings.ReplaceAll(body, "\r\n", "\n"), "\n", "\r\n")
	qp := quotedprintable.NewWriter(w)
	if _, err := qp.Write([]byte(body)); err != nil {
		return fmt.Errorf("%w: encoding body: %v", ErrInvalidRequest, err)
	}
	if err := qp.Close(); err != nil {
		return fmt.Errorf("%w: encoding body: %v", ErrInvalidRequest, err)
	}
	_, err := w.Write([]byte("\r\n"))
	return err
}

// linkOf is what every tracking link of req carries. Without hwid and user
// id the email address is the hwid, as registerDevice makes it for email
// subscribers (device type 14, lowercased).
func (e *Email) linkOf(app *apps.App, req *schemas.DispatchRequest) track.Link {
	l := track.Link{
		App: app.ID, DispatchID: req.ID, HWID: req.HWID, UserID: req.UserID,
		SourceKind: req.Source.Kind, SourceName: req.Source.Name,
	}
	if l.HWID == "" && l.UserID == "" {
		l.HWID = strings.ToLower(req.To)
	}
	return l
}

// listUnsubscribe is the List-Unsubscribe value: Herald's one-click link
// (with tracking) and the app's mailto (when set); "" without either.
func (e *Email) listUnsubscribe(app *apps.App, l track.Link) (string, error) {
	var parts []string
	if e.signer != nil {
		tok, err := e.signer.Sign(track.KindUnsubscribe, l)
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrInvalidRequest, err)
		}
		parts = append(parts, "<"+track.URL(e.cfg.TrackingURL, track.KindUnsubscribe, tok)+">")
	}
	if to := app.Email.UnsubscribeMailto; to != "" {
		parts = append(parts, "<mailto:"+to+"?subject=unsubscribe>")
	}
	return strings.Join(parts, ", "), nil
}

// hrefRE finds the href attribute of <a> tags, quoted either way or not.
// (Only an attribute named href: not data-href or xhref.)
var hrefRE = regexp.MustCompile(`(?is)(<a(?:\s[^>]*?)?\shref\s*=\s*)(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))`)

// bodyCloseRE finds the last </body>.
var bodyCloseRE = regexp.MustCompile(`(?i)</body\s*>`)

// rewriteHTML replaces each http(s) link by a signed click link and adds
// the open pixel before </body> (at the end without one). Other links
// (mailto:, tel:, #anchors, relative) are left as they are.
func (e *Email) rewriteHTML(body string, l track.Link) (string, error) {
	var firstErr error
	out := hrefRE.ReplaceAllStringFunc(body, func(m string) string {
		sub := hrefRE.FindStringSubmatch(m)
		raw := sub[2] + sub[3] + sub[4] // one of them is set
		target := strings.TrimSpace(html.UnescapeString(raw))
		lower := strings.ToLower(target)
		if !strings.HasPrefix(lower, "http://") && !strings.HasPrefix(lower, "https://") {
			return m
		}
		if track.CheckURL(target) != nil {
			return m // not a URL a redirect may carry: leave it untracked
		}
		cl := l
		cl.URL = target
		tok, err := e.signer.Sign(track.KindClick, cl)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			return m
		}
		return sub[1] + `"` + html.EscapeString(track.URL(e.cfg.TrackingURL, track.KindClick, tok)) + `"`
	})
	if firstErr != nil {
		return "", fmt.Errorf("%w: signing click link: %v", ErrInvalidRequest, firstErr)
	}
	tok, err := e.signer.Sign(track.KindOpen, l)
	if err != nil {
		return "", fmt.Errorf("%w: signing open pixel: %v", ErrInvalidRequest, err)
	}
	pixel := `<img src="` + html.EscapeString(track.URL(e.cfg.TrackingURL, track.KindOpen, tok)) +
		`" width="1" height="1" alt="" style="display:block;border:0;width:1px;height:1px">`
	if locs := bodyCloseRE.FindAllStringIndex(out, -1); len(locs) > 0 {
		at := locs[len(locs)-1][0]
		return out[:at] + pixel + out[at:], nil
	}
	return out + pixel, nil
}

func cut(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
