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
		{"status=APPROVED&category=MARKETING", []string{"promo_offer", "sushi_promo", "welcome_back"}},
		{"name=order", []string{"order_confirmation", "order_confirmation"}},
		{"name=order&language=pt_BR", []string{"order_confirmation"}},
		{"status=paused", []string{"flash_sale"}},
		{"category=AUTHENTICATION", []string{"otp_code"}},
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
