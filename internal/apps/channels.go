package apps

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/mail"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Email is an app's email identity and the SMTP server it submits through.
type Email struct {
	// From is the default From address (news@shop.example); FromName its
	// display name. Required with SMTP.
	From     string `yaml:"from"`
	FromName string `yaml:"from_name"`
	// Senders are further From addresses the app may send from (a dispatch
	// request's sender); From is always one.
	Senders []string `yaml:"senders"`
	// ReplyTo is the default Reply-To address; optional.
	ReplyTo string `yaml:"reply_to"`
	// UnsubscribeMailto, when set, is added to every List-Unsubscribe
	// header as mailto:<address> next to Herald's one-click link.
	UnsubscribeMailto string `yaml:"unsubscribe_mailto"`
	// SMTP is the submission server.
	SMTP SMTP `yaml:"smtp"`
}

// SMTP TLS modes (SMTP.TLS).
const (
	// TLSStartTLS: plain connection upgraded with STARTTLS before AUTH and
	// MAIL; a server that does not offer STARTTLS is refused (port 587).
	TLSStartTLS = "starttls"
	// TLSImplicit: TLS from the first byte (port 465).
	TLSImplicit = "tls"
	// TLSNone: plain text throughout, credentials included: only for a
	// server on the same host or network that needs no protection.
	TLSNone = "none"
)

// SMTP is how to reach an SMTP submission server. It prints as its address
// only: the password never reaches a log.
type SMTP struct {
	// Addr is host:port.
	Addr string `yaml:"addr"`
	// Username and Password are for AUTH PLAIN or LOGIN (whichever the
	// server offers; PLAIN first); empty Username: no AUTH. Password is a
	// secret (env: or file: reference).
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// TLS is starttls (default), tls or none, see the TLS constants.
	TLS string `yaml:"tls"`
	// ServerName is the name checked in the server's certificate.
	// Default: Addr's host.
	ServerName string `yaml:"server_name"`
	// CAFile is a PEM file of the CAs to trust instead of the system's
	// (a private relay, the dev SMTP sink). Read when the registry is
	// built, so CAPEM holds its content.
	CAFile string `yaml:"ca_file"`
	// CAPEM is the content of CAFile, or CA certificates given directly
	// (tests, the dev stack).
	CAPEM []byte `yaml:"-"`
	// HeloName is the name sent with EHLO. Default "localhost".
	HeloName string `yaml:"helo_name"`
}

// String shows the server's address, never the password.
func (s SMTP) String() string { return "smtp://" + s.Addr }

// LogValue shows the server's address, never the password.
func (s SMTP) LogValue() slog.Value { return slog.StringValue(s.String()) }

// LogValue shows the project id, never the token.
func (f FCM) LogValue() slog.Value { return slog.StringValue(f.String()) }

// Push is an app's push configuration.
type Push struct {
	// FCM is the app's Firebase project.
	FCM FCM `yaml:"fcm"`
}

// FCM is a Firebase Cloud Messaging project. It prints as its project id
// only.
type FCM struct {
	// ProjectID is the Firebase project id, in the send URL
	// /v1/projects/{project_id}/messages:send.
	ProjectID string `yaml:"project_id"`
	// AccessToken is the OAuth2 bearer token of the project's service
	// account (a secret: env: or file: reference), minted outside Herald;
	// the simulator's static token in dev.
	AccessToken string `yaml:"access_token"`
}

// String shows the project id, never the token.
func (f FCM) String() string { return "fcm:" + f.ProjectID }

// Enabled reports whether the app can send email.
func (e *Email) Enabled() bool { return e.SMTP.Addr != "" }

// Sender returns the From address for a dispatch request's sender: From
// when sender is empty, else sender itself if it is one of the app's
// addresses (case-insensitive). ok is false for a foreign address.
func (e *Email) Sender(sender string) (addr string, ok bool) {
	if sender == "" {
		return e.From, e.From != ""
	}
	for _, a := range append([]string{e.From}, e.Senders...) {
		if a != "" && strings.EqualFold(a, sender) {
			return a, true
		}
	}
	return "", false
}

// Enabled reports whether the app can send push notifications.
func (p *Push) Enabled() bool { return p.FCM.ProjectID != "" }

func (e *Email) resolve() error {
	if !e.Enabled() {
		if e.From != "" || len(e.Senders) > 0 {
			return errors.New("email.smtp.addr is required with email.from")
		}
		return nil
	}
	if e.From == "" {
		return errors.New("email.from is required with email.smtp")
	}
	for i, a := range append([]string{e.From}, e.Senders...) {
		field := "email.from"
		if i > 0 {
			field = fmt.Sprintf("email.senders[%d]", i-1)
		}
		if err := bareAddress(field, a); err != nil {
			return err
		}
	}
	e.Senders = slices.Clone(e.Senders)
	if e.ReplyTo != "" {
		if err := bareAddress("email.reply_to", e.ReplyTo); err != nil {
			return err
		}
	}
	if e.UnsubscribeMailto != "" {
		if err := bareAddress("email.unsubscribe_mailto", e.UnsubscribeMailto); err != nil {
			return err
		}
	}
	if strings.ContainsAny(e.FromName, "\r\n") {
		return errors.New("email.from_name must be one line")
	}
	return e.SMTP.resolve()
}

func (s *SMTP) resolve() error {
	host, port, err := net.SplitHostPort(s.Addr)
	if err != nil || host == "" {
		return fmt.Errorf("email.smtp.addr %q: want host:port", s.Addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("email.smtp.addr %q: port must be 1 to 65535", s.Addr)
	}
	switch s.TLS {
	case "":
		s.TLS = TLSStartTLS
	case TLSStartTLS, TLSImplicit, TLSNone:
	default:
		return fmt.Errorf("email.smtp.tls %q: want starttls, tls or none", s.TLS)
	}
	if s.ServerName == "" {
		s.ServerName = host
	}
	if s.HeloName == "" {
		s.HeloName = "localhost"
	}
	if strings.ContainsAny(s.HeloName, " \r\n") || strings.ContainsAny(s.Username, "\r\n") {
		return errors.New("email.smtp.helo_name and username must be one word")
	}
	pw, err := ResolveSecret(s.Password)
	if err != nil {
		return fmt.Errorf("email.smtp.password: %w", err)
	}
	s.Password = pw
	if s.Password != "" && s.Username == "" {
		return errors.New("email.smtp.username is required with a password")
	}
	if s.CAFile != "" {
		b, err := os.ReadFile(s.CAFile)
		if err != nil {
			return fmt.Errorf("email.smtp.ca_file: %w", err)
		}
		s.CAPEM = b
	}
	return nil
}

// bareAddress checks that a is one plain address (user@domain), without a
// display name or angle brackets.
func bareAddress(field, a string) error {
	p, err := mail.ParseAddress(a)
	if err != nil || p.Name != "" || p.Address != a || !strings.Contains(a, "@") {
		return fmt.Errorf("%s %q: want a plain address like news@shop.example", field, a)
	}
	return nil
}

var fcmProjectRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

func (p *Push) resolve() error {
	f := &p.FCM
	if f.ProjectID == "" {
		if f.AccessToken != "" {
			return errors.New("push.fcm.project_id is required with push.fcm.access_token")
		}
		return nil
	}
	if !fcmProjectRE.MatchString(f.ProjectID) {
		return fmt.Errorf("push.fcm.project_id %q: want lowercase letters, digits and hyphens", f.ProjectID)
	}
	tok, err := ResolveSecret(f.AccessToken)
	if err != nil {
		return fmt.Errorf("push.fcm.access_token: %w", err)
	}
	if tok == "" {
		return errors.New("push.fcm.access_token is required with push.fcm.project_id")
	}
	f.AccessToken = tok
	return nil
}
