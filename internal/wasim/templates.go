package wasim

import (
	"encoding/base64"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
)

// Paging of GET /{version}/{waba-id}/message_templates.
const (
	defaultPageLimit = 25
	maxPageLimit     = 1000
)

// registry holds the templates of each WABA, in registration order.
type registry struct {
	mu     sync.RWMutex
	byWABA map[string][]Template
}

func newRegistry(numbers []Number, seed []Template) *registry {
	r := &registry{byWABA: make(map[string][]Template)}
	for _, n := range numbers {
		if _, ok := r.byWABA[n.WABAID]; !ok {
			r.byWABA[n.WABAID] = append([]Template(nil), seed...)
		}
	}
	return r
}

// lookup finds a template by name and language. otherLang reports that the
// name exists in another language.
func (r *registry) lookup(waba, name, lang string) (t Template, found, otherLang bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, x := range r.byWABA[waba] {
		if x.Name == name {
			if x.Language == lang {
				return x, true, false
			}
			otherLang = true
		}
	}
	return Template{}, false, otherLang
}

// set adds a template or replaces the one with the same name and language.
func (r *registry) set(waba string, t Template) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	list, ok := r.byWABA[waba]
	if !ok {
		return fmt.Errorf("waba %s is not configured", waba)
	}
	for i := range list {
		if list[i].Name == t.Name && list[i].Language == t.Language {
			list[i] = t
			return nil
		}
	}
	r.byWABA[waba] = append(list, t)
	return nil
}

// setStatus changes the status of a template and returns it.
func (r *registry) setStatus(waba, name, lang, status string) (Template, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	list, ok := r.byWABA[waba]
	if !ok {
		return Template{}, fmt.Errorf("waba %s is not configured", waba)
	}
	for i := range list {
		if list[i].Name == name && list[i].Language == lang {
			list[i].Status = status
			return list[i], nil
		}
	}
	return Template{}, fmt.Errorf("waba %s has no template %s in %s", waba, name, lang)
}

// remove deletes a template.
func (r *registry) remove(waba, name, lang string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	list, ok := r.byWABA[waba]
	if !ok {
		return fmt.Errorf("waba %s is not configured", waba)
	}
	for i := range list {
		if list[i].Name == name && list[i].Language == lang {
			r.byWABA[waba] = append(list[:i:i], list[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("waba %s has no template %s in %s", waba, name, lang)
}

func (r *registry) list(waba string) ([]Template, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	l, ok := r.byWABA[waba]
	return append([]Template(nil), l...), ok
}

// templateID is a stable Graph-like id for a template.
func templateID(waba string, t *Template) string {
	h := fnv.New64a()
	h.Write([]byte(waba + "\x00" + t.Name + "\x00" + t.Language))
	return strconv.FormatUint(1e15+h.Sum64()%9e15, 10)
}

// templateJSON is one element of the message_templates data.
type templateJSON struct {
	Name            string          `json:"name"`
	ParameterFormat string          `json:"parameter_format"`
	Components      []componentJSON `json:"components"`
	Language        string          `json:"language"`
	Status          string          `json:"status"`
	Category        string          `json:"category"`
	ID              string          `json:"id"`
}

type componentJSON struct {
	Type    string         `json:"type"`
	Format  string         `json:"format,omitempty"`
	Text    string         `json:"text,omitempty"`
	Example map[string]any `json:"example,omitempty"`
	Buttons []buttonJSON   `json:"buttons,omitempty"`
}

// buttonJSON is one button of a BUTTONS component, as Meta lists it.
type buttonJSON struct {
	Type        string   `json:"type"`
	Text        string   `json:"text"`
	URL         string   `json:"url,omitempty"`
	PhoneNumber string   `json:"phone_number,omitempty"`
	OTPType     string   `json:"otp_type,omitempty"`
	Example     []string `json:"example,omitempty"`
}

// headerHandle is an example media handle, shaped like the upload handles
// Meta lists for media headers.
const headerHandle = "4::aW1hZ2UvanBn:ARYytyb0kLp5htbBB8vWlclG5M9gMBxiEyt4FNCvrueWBOmFmRAztEuNtPGUnEC22Etc_SAAVU0YJOk3B7A"

func toTemplateJSON(waba string, t *Template) templateJSON {
	out := templateJSON{
		Name: t.Name, ParameterFormat: "POSITIONAL", Language: t.Language,
		Status: t.Status, Category: t.Category, ID: templateID(waba, t),
	}
	switch t.HeaderFormat {
	case HeaderText:
		h := componentJSON{Type: "HEADER", Format: HeaderText, Text: "Hello"}
		if t.HeaderParams > 0 {
			h.Text = "Hello {{1}}"
			h.Example = map[string]any{"header_text": []string{"Jane"}}
		}
		out.Components = append(out.Components, h)
	case HeaderImage, HeaderVideo, HeaderDocument:
		out.Components = append(out.Components, componentJSON{
			Type: "HEADER", Format: t.HeaderFormat,
			Example: map[string]any{"header_handle": []string{headerHandle}},
		})
	case HeaderLocation:
		out.Components = append(out.Components, componentJSON{Type: "HEADER", Format: HeaderLocation})
	}
	body := componentJSON{Type: "BODY", Text: t.bodyText()}
	if t.BodyParams > 0 {
		ex := make([]string, t.BodyParams)
		for i := range ex {
			ex[i] = fmt.Sprintf("example%d", i+1)
		}
		body.Example = map[string]any{"body_text": [][]string{ex}}
	}
	out.Components = append(out.Components, body)
	if len(t.Buttons) > 0 {
		bs := make([]buttonJSON, len(t.Buttons))
		for i, b := range t.Buttons {
			bs[i] = buttonJSON{Type: b.Type, Text: b.Text, URL: b.URL, PhoneNumber: b.PhoneNumber}
			switch {
			case b.Type == ButtonOTP:
				bs[i].OTPType = "COPY_CODE"
			case b.takesParam():
				bs[i].Example = []string{strings.TrimSuffix(b.URL, "{{1}}") + "example"}
			}
		}
		out.Components = append(out.Components, componentJSON{Type: "BUTTONS", Buttons: bs})
	}
	return out
}

type templatePage struct {
	Data   []templateJSON `json:"data"`
	Paging *pagingJSON    `json:"paging,omitempty"`
}

type pagingJSON struct {
	Cursors  cursorsJSON `json:"cursors"`
	Next     string      `json:"next,omitempty"`
	Previous string      `json:"previous,omitempty"`
}

type cursorsJSON struct {
	Before string `json:"before"`
	After  string `json:"after"`
}

func encodeCursor(i int) string {
	return base64.RawURLEncoding.EncodeToString([]byte("tpl:" + strconv.Itoa(i)))
}

// decodeCursor decodes a paging cursor; it never panics.
func decodeCursor(c string) (int, bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, false
	}
	s, ok := strings.CutPrefix(string(b), "tpl:")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(s)
	if err != nil || i < 0 || i > 1<<30 {
		return 0, false
	}
	return i, true
}

// listTemplates answers GET /{version}/{waba-id}/message_templates with
// Graph cursor paging (limit, after, before) and the filters name
// (substring), status, category and language.
func (s *Sim) listTemplates(w http.ResponseWriter, r *http.Request, version, waba string) {
	tok, gerr := bearer(r)
	if gerr != nil {
		s.writeError(w, gerr)
		return
	}
	if gerr := s.authWABA(tok, waba); gerr != nil {
		s.writeError(w, gerr)
		return
	}
	all, _ := s.templates.list(waba)
	q := r.URL.Query()
	limit := defaultPageLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			s.writeError(w, errParam("Param limit must be a positive integer."))
			return
		}
		limit = min(n, maxPageLimit)
	}
	var list []Template
	for _, t := range all {
		if v := q.Get("name"); v != "" && !strings.Contains(t.Name, v) {
			continue
		}
		if v := q.Get("status"); v != "" && !strings.EqualFold(t.Status, v) {
			continue
		}
		if v := q.Get("category"); v != "" && !strings.EqualFold(t.Category, v) {
			continue
		}
		if v := q.Get("language"); v != "" && t.Language != v {
			continue
		}
		list = append(list, t)
	}
	start, end := 0, len(list)
	switch {
	case q.Get("after") != "":
		i, ok := decodeCursor(q.Get("after"))
		if !ok {
			s.writeError(w, errParam("Param after is not a valid cursor."))
			return
		}
		start = min(i+1, len(list))
	case q.Get("before") != "":
		i, ok := decodeCursor(q.Get("before"))
		if !ok {
			s.writeError(w, errParam("Param before is not a valid cursor."))
			return
		}
		end = min(i, len(list))
		start = max(0, end-limit)
	}
	end = min(end, start+limit)
	page := templatePage{Data: []templateJSON{}}
	for i := start; i < end; i++ {
		page.Data = append(page.Data, toTemplateJSON(waba, &list[i]))
	}
	if len(page.Data) > 0 {
		p := &pagingJSON{Cursors: cursorsJSON{Before: encodeCursor(start), After: encodeCursor(end - 1)}}
		link := func(key, cursor string) string {
			lq := url.Values{}
			for _, k := range []string{"name", "status", "category", "language", "fields"} {
				if v := q.Get(k); v != "" {
					lq.Set(k, v)
				}
			}
			lq.Set("limit", strconv.Itoa(limit))
			lq.Set(key, cursor)
			scheme := "http"
			if r.TLS != nil {
				scheme = "https"
			}
			return (&url.URL{Scheme: scheme, Host: r.Host, Path: "/" + version + "/" + waba + "/message_templates", RawQuery: lq.Encode()}).String()
		}
		if end < len(list) {
			p.Next = link("after", p.Cursors.After)
		}
		if start > 0 {
			p.Previous = link("before", p.Cursors.Before)
		}
		page.Paging = p
	}
	s.writeJSON(w, http.StatusOK, page)
}
