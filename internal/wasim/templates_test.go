package wasim

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

type pageJSON struct {
	Data []struct {
		Name            string `json:"name"`
		Language        string `json:"language"`
		Status          string `json:"status"`
		Category        string `json:"category"`
		ID              string `json:"id"`
		ParameterFormat string `json:"parameter_format"`
		Components      []struct {
			Type    string          `json:"type"`
			Format  string          `json:"format"`
			Text    string          `json:"text"`
			Example json.RawMessage `json:"example"`
			Buttons []struct {
				Type        string   `json:"type"`
				Text        string   `json:"text"`
				URL         string   `json:"url"`
				PhoneNumber string   `json:"phone_number"`
				OTPType     string   `json:"otp_type"`
				Example     []string `json:"example"`
			} `json:"buttons"`
		} `json:"components"`
	} `json:"data"`
	Paging *struct {
		Cursors struct {
			Before string `json:"before"`
			After  string `json:"after"`
		} `json:"cursors"`
		Next     string `json:"next"`
		Previous string `json:"previous"`
	} `json:"paging"`
}

func (h *harness) page(t *testing.T, pathOrURL, token string) pageJSON {
	t.Helper()
	if u, err := url.Parse(pathOrURL); err == nil && u.Host != "" {
		pathOrURL = u.RequestURI()
	}
	r := h.do(t, http.MethodGet, pathOrURL, token, "")
	if r.status != 200 {
		t.Fatalf("GET %s: HTTP %d %s", pathOrURL, r.status, r.raw)
	}
	var p pageJSON
	dec := json.NewDecoder(strings.NewReader(string(r.raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("page shape: %v: %s", err, r.raw)
	}
	return p
}

// TestTemplatePaging walks the template list with after cursors, following
// the next links, and back with previous.
func TestTemplatePaging(t *testing.T) {
	h := newHarness(t, hopts{mod: func(c *Config) { c.Templates = DefaultTemplates() }})
	var names []string
	var pages []pageJSON
	link := "/v21.0/" + waba1 + "/message_templates?limit=4"
	for link != "" {
		p := h.page(t, link, token1)
		pages = append(pages, p)
		for _, d := range p.Data {
			names = append(names, d.Name)
		}
		if p.Paging == nil {
			t.Fatalf("page without paging")
		}
		link = p.Paging.Next
		if link != "" && !strings.Contains(link, "/v21.0/"+waba1+"/message_templates?") {
			t.Errorf("next link %q does not repeat the version and WABA", link)
		}
		if len(pages) > 10 {
			t.Fatal("paging does not end")
		}
	}
	var want []string
	for _, tm := range DefaultTemplates() {
		want = append(want, tm.Name)
	}
	if !slices.Equal(names, want) {
		t.Errorf("paged names %v, want %v", names, want)
	}
	if len(pages) != 3 || len(pages[0].Data) != 4 || len(pages[2].Data) != 2 { // 10 templates, 4 a page
		t.Errorf("got %d pages", len(pages))
	}
	if pages[0].Paging.Previous != "" || pages[1].Paging.Previous == "" {
		t.Errorf("previous links: %q, %q", pages[0].Paging.Previous, pages[1].Paging.Previous)
	}
	back := h.page(t, pages[1].Paging.Previous, token1)
	if len(back.Data) != 4 || back.Data[0].Name != pages[0].Data[0].Name || back.Data[3].Name != pages[0].Data[3].Name {
		t.Errorf("previous of page 2 is not page 1: %+v", back.Data)
	}
	// Past the end: empty data, no paging.
	end := h.page(t, "/v23.0/"+waba1+"/message_templates?after="+pages[2].Paging.Cursors.After, token1)
	if len(end.Data) != 0 || end.Paging != nil {
		t.Errorf("past the end: %+v", end)
	}
}

func TestTemplateListing(t *testing.T) {
	h := newHarness(t, hopts{})
	all := h.page(t, "/v23.0/"+waba1+"/message_templates", token1)
	if len(all.Data) != len(testConfig(h.rc1, h.rc3).Templates) {
		t.Fatalf("got %d templates", len(all.Data))
	}
	ids := make(map[string]bool)
	for _, d := range all.Data {
		if d.ID == "" || ids[d.ID] || d.ParameterFormat != "POSITIONAL" {
			t.Errorf("%s: id %q, parameter_format %q", d.Name, d.ID, d.ParameterFormat)
		}
		ids[d.ID] = true
		tm, _, _ := h.sim.templates.lookup(waba1, d.Name, d.Language)
		var body, header string
		for _, c := range d.Components {
			switch c.Type {
			case "BODY":
				body = c.Text
			case "HEADER":
				header = c.Text
			}
		}
		if countPlaceholders(body) != tm.BodyParams || countPlaceholders(header) != tm.HeaderParams {
			t.Errorf("%s: components do not match %d body and %d header params: %+v", d.Name, tm.BodyParams, tm.HeaderParams, d.Components)
		}
		if tm.Text != "" && body != tm.Text {
			t.Errorf("%s: body %q, want %q", d.Name, body, tm.Text)
		}
	}
	again := h.page(t, "/v23.0/"+waba1+"/message_templates", token1)
	if again.Data[0].ID != all.Data[0].ID {
		t.Errorf("template ids are not stable")
	}

	filters := []struct {
		query string
		want  []string
	}{
		{"status=APPROVED&category=MARKETING", []string{"promo_offer", "sushi_promo", "welcome_back", "new_arrivals"}},
		{"name=order", []string{"order_confirmation", "order_confirmation"}},
		{"name=order&language=pt_BR", []string{"order_confirmation"}},
		{"status=paused", []string{"flash_sale"}},
		{"category=AUTHENTICATION", []string{"otp_code", "login_code"}},
	}
	for _, f := range filters {
		p := h.page(t, "/v23.0/"+waba1+"/message_templates?"+f.query, token1)
		var got []string
		for _, d := range p.Data {
			got = append(got, d.Name)
		}
		if !slices.Equal(got, f.want) {
			t.Errorf("%s: got %v, want %v", f.query, got, f.want)
		}
	}
}

// TestSetTemplate changes a template at run time: the send and the listing
// both see it, in that WABA only.
func TestSetTemplate(t *testing.T) {
	h := newHarness(t, hopts{mod: func(c *Config) { c.PairInterval = -1 }})
	paused := Template{Name: "promo_offer", Language: "en_US", Category: CategoryMarketing, Status: StatusPaused, BodyParams: 1}
	if err := h.sim.SetTemplate(waba1, paused); err != nil {
		t.Fatal(err)
	}
	if c := h.send(t, phone1, token1, templateBody("+15557770001", "promo_offer", "en_US", "Ann")).code(); c != CodeTemplatePaused {
		t.Errorf("paused in WABA 1: code %d", c)
	}
	if c := h.send(t, phone3, token3, templateBody("+15557770001", "promo_offer", "en_US", "Ann")).code(); c != 0 {
		t.Errorf("WABA 2 is unchanged: code %d", c)
	}
	p := h.page(t, "/v23.0/"+waba1+"/message_templates?name=promo_offer", token1)
	if len(p.Data) != 1 || p.Data[0].Status != StatusPaused {
		t.Errorf("listing: %+v", p.Data)
	}
	paused.Status = StatusApproved
	if err := h.sim.SetTemplate(waba1, paused); err != nil {
		t.Fatal(err)
	}
	if c := h.send(t, phone1, token1, templateBody("+15557770001", "promo_offer", "en_US", "Ann")).code(); c != 0 {
		t.Errorf("approved again: code %d", c)
	}
	if err := h.sim.SetTemplate("nope", paused); err == nil {
		t.Errorf("SetTemplate on an unknown WABA succeeded")
	}
	if err := h.sim.SetTemplate(waba1, Template{Name: "Bad Name", Language: "en_US", Category: CategoryMarketing, Status: StatusApproved}); err == nil {
		t.Errorf("SetTemplate with a bad name succeeded")
	}
}

// TestTemplateComponents: headers of every format and buttons are listed as
// Meta lists them (format, example handle, buttons with their url and the
// example of a variable suffix).
func TestTemplateComponents(t *testing.T) {
	h := newHarness(t, hopts{})
	type comp struct{ typ, format string }
	want := map[string]struct {
		comps   []comp
		buttons []string // type:url
	}{
		"ticket_update": {[]comp{{"HEADER", "TEXT"}, {"BODY", ""}, {"BUTTONS", ""}}, []string{"QUICK_REPLY:", "URL:https://help.example/t/{{1}}"}},
		"new_arrivals":  {[]comp{{"HEADER", "IMAGE"}, {"BODY", ""}, {"BUTTONS", ""}}, []string{"URL:https://shop.example/new", "PHONE_NUMBER:"}},
		"store_visit":   {[]comp{{"HEADER", "LOCATION"}, {"BODY", ""}}, nil},
		"login_code":    {[]comp{{"BODY", ""}, {"BUTTONS", ""}}, []string{"OTP:"}},
		"promo_offer":   {[]comp{{"BODY", ""}}, nil},
	}
	p := h.page(t, "/v23.0/"+waba1+"/message_templates?limit=100", token1)
	seen := 0
	for _, d := range p.Data {
		w, ok := want[d.Name]
		if !ok || d.Language != "en_US" {
			continue
		}
		seen++
		var comps []comp
		var buttons []string
		for _, c := range d.Components {
			comps = append(comps, comp{c.Type, c.Format})
			if c.Type == "HEADER" && c.Format == "IMAGE" && !strings.Contains(string(c.Example), "header_handle") {
				t.Errorf("%s: image header without an example handle: %s", d.Name, c.Example)
			}
			for _, b := range c.Buttons {
				buttons = append(buttons, b.Type+":"+b.URL)
				if strings.HasSuffix(b.URL, "{{1}}") && len(b.Example) != 1 {
					t.Errorf("%s: variable url button without an example", d.Name)
				}
				if b.Type == "OTP" && b.OTPType != "COPY_CODE" {
					t.Errorf("%s: otp_type %q", d.Name, b.OTPType)
				}
			}
		}
		if !slices.Equal(comps, w.comps) || !slices.Equal(buttons, w.buttons) {
			t.Errorf("%s: components %v buttons %v, want %v %v", d.Name, comps, buttons, w.comps, w.buttons)
		}
	}
	if seen != len(want) {
		t.Fatalf("found %d of %d templates", seen, len(want))
	}
}

// TestTemplateSendChecks: a send must give each header its type, every
// button that takes a parameter its url text, and nothing for the others.
func TestTemplateSendChecks(t *testing.T) {
	h := newHarness(t, hopts{mod: func(c *Config) { c.PairInterval = -1 }})
	send := func(name string, comps ...string) apiResult {
		return h.send(t, phone1, token1, `{"messaging_product":"whatsapp","to":"+15557770002","type":"template","template":{"name":"`+
			name+`","language":{"code":"en_US"},"components":[`+strings.Join(comps, ",")+`]}}`)
	}
	const (
		textHeader = `{"type":"header","parameters":[{"type":"text","text":"T-1"}]}`
		imgHeader  = `{"type":"header","parameters":[{"type":"image","image":{"link":"https://shop.example/a.jpg"}}]}`
		locHeader  = `{"type":"header","parameters":[{"type":"location","location":{"latitude":1,"longitude":2}}]}`
		body1      = `{"type":"body","parameters":[{"type":"text","text":"Ann"}]}`
		url1       = `{"type":"button","sub_type":"url","index":"1","parameters":[{"type":"text","text":"abc"}]}`
		url0       = `{"type":"button","sub_type":"url","index":"0","parameters":[{"type":"text","text":"abc"}]}`
		reply0     = `{"type":"button","sub_type":"quick_reply","index":"0","parameters":[{"type":"payload","payload":"STOP"}]}`
	)
	tests := []struct {
		name  string
		tmpl  string
		comps []string
		code  int
	}{
		{"text header and url suffix", "ticket_update", []string{textHeader, body1, url1}, 0},
		{"quick reply payload is optional", "ticket_update", []string{textHeader, body1, reply0, url1}, 0},
		{"url suffix missing", "ticket_update", []string{textHeader, body1}, CodeParamMissing},
		{"url suffix on the quick reply", "ticket_update", []string{textHeader, body1, url0, url1}, CodeTemplateParams},
		{"image for a text header", "ticket_update", []string{imgHeader, body1, url1}, CodeParamFormat},
		{"image header", "new_arrivals", []string{imgHeader, body1}, 0},
		{"image header missing", "new_arrivals", []string{body1}, CodeTemplateParams},
		{"text for an image header", "new_arrivals", []string{textHeader, body1}, CodeParamFormat},
		{"static url takes no suffix", "new_arrivals", []string{imgHeader, body1, url0}, CodeTemplateParams},
		{"button past the last", "new_arrivals", []string{imgHeader, body1, `{"type":"button","sub_type":"quick_reply","index":"5","parameters":[{"type":"payload","payload":"x"}]}`}, CodeInvalidParameter},
		{"location header", "store_visit", []string{locHeader}, 0},
		{"location header missing", "store_visit", nil, CodeTemplateParams},
		{"otp code", "login_code", []string{body1, url0}, 0},
		{"otp code missing", "login_code", []string{body1}, CodeParamMissing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := send(tt.tmpl, tt.comps...)
			if r.code() != tt.code {
				t.Fatalf("code %d, want %d: %s", r.code(), tt.code, r.raw)
			}
		})
	}
}

// TestSetTemplateStatus: a status change is seen by sends and the listing at
// once, and Meta's signed message_template_status_update webhook reaches
// the WABA's webhook.
func TestSetTemplateStatus(t *testing.T) {
	h := newHarness(t, hopts{mod: func(c *Config) { c.PairInterval = -1 }})
	promo := func() int {
		return h.send(t, phone1, token1, templateBody("+15557770003", "promo_offer", "en_US", "Ann")).code()
	}
	if err := h.sim.SetTemplateStatus(t.Context(), waba1, "promo_offer", "en_US", StatusPaused, ""); err != nil {
		t.Fatal(err)
	}
	if c := promo(); c != CodeTemplatePaused {
		t.Fatalf("paused: code %d", c)
	}
	changes := h.rc1.templateChanges()
	p := h.page(t, "/v23.0/"+waba1+"/message_templates?name=promo_offer", token1)
	if len(changes) != 1 || len(p.Data) != 1 {
		t.Fatalf("webhooks %+v, listing %+v", changes, p.Data)
	}
	want := hookTemplate{Event: StatusPaused, ID: json.Number(p.Data[0].ID), Name: "promo_offer", Language: "en_US", Reason: "NONE"}
	if changes[0] != want || p.Data[0].Status != StatusPaused {
		t.Fatalf("webhook %+v, want %+v; listed status %s", changes[0], want, p.Data[0].Status)
	}
	if err := h.sim.SetTemplateStatus(t.Context(), waba1, "promo_offer", "en_US", StatusApproved, ""); err != nil {
		t.Fatal(err)
	}
	if c := promo(); c != 0 {
		t.Fatalf("approved again: code %d", c)
	}
	if n := len(h.rc3.templateChanges()); n != 0 {
		t.Errorf("WABA 2's webhook got %d template changes", n)
	}
	if st := h.sim.Stats(); st.TemplateWebhooks != 2 || st.MessageRequests != 2 || st.TemplateRequests != 1 {
		t.Errorf("stats %+v", st)
	}
	for _, bad := range []struct{ waba, name, status string }{
		{waba1, "promo_offer", "SLEEPING"}, {waba1, "nope", StatusPaused}, {"9999", "promo_offer", StatusPaused},
	} {
		if err := h.sim.SetTemplateStatus(t.Context(), bad.waba, bad.name, "en_US", bad.status, ""); err == nil {
			t.Errorf("SetTemplateStatus(%+v) succeeded", bad)
		}
	}

	if err := h.sim.DeleteTemplate(waba1, "promo_offer", "en_US"); err != nil {
		t.Fatal(err)
	}
	if c := promo(); c != CodeTemplateMissing {
		t.Fatalf("deleted: code %d", c)
	}
	if p := h.page(t, "/v23.0/"+waba1+"/message_templates?name=promo_offer", token1); len(p.Data) != 0 {
		t.Fatalf("deleted template listed: %+v", p.Data)
	}
	if err := h.sim.DeleteTemplate(waba1, "promo_offer", "en_US"); err == nil {
		t.Error("deleting twice succeeded")
	}
}
