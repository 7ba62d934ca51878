package cli

import (
	"strings"
	"testing"
)

// TestBenchStages: -stages names known measurements, and the dispatcher's
// needs the segmenter's, whose output is its backlog.
func TestBenchStages(t *testing.T) {
	for _, tt := range []struct{ list, err string }{
		{"segmenter,dispatcher,analytics,e2e", ""},
		{" segmenter , analytics ", ""},
		{"analytics,e2e", ""},
		{"segmenter,dispatch", `unknown stage "dispatch"`},
		{"dispatcher", "dispatcher needs segmenter"},
	} {
		stages, err := benchStages(tt.list)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("benchStages(%q): %v", tt.list, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("benchStages(%q) = %v, %v; want an error with %q", tt.list, stages, err, tt.err)
		}
	}
	if s, _ := benchStages(" segmenter , analytics "); !s["segmenter"] || !s["analytics"] || s["e2e"] {
		t.Errorf("benchStages: %v", s)
	}
}
