package segmenter

import (
	"reflect"
	"testing"
	"time"

	"github.com/heraldhq/herald/schemas"
)

func TestMergeTagOps(t *testing.T) {
	now := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	p := new(Profile)
	n := 0
	apply := func(tags map[string]any, ops map[string]string) int {
		t.Helper()
		n++
		_, ignored := p.apply(&schemas.Event{
			ID: string(rune('a' + n)), App: "a", Kind: schemas.KindTags,
			Time: now, UserID: "u", Tags: tags, TagOps: ops,
		})
		return ignored
	}
	apply(map[string]any{"orders": 2.0, "food": []any{"thai", "sushi"}, "name": "x"}, nil)
	apply(map[string]any{"orders": 3.0, "food": []any{"sushi", "pizza"}}, map[string]string{"orders": schemas.OpIncrement, "food": schemas.OpAppend})
	if got := p.Tags["orders"]; got.Kind != TagNumber || got.Num != 5 {
		t.Fatalf("orders after increment = %+v, want 5", got)
	}
	if got := p.Tags["food"].List; !reflect.DeepEqual(got, []string{"thai", "sushi", "pizza"}) {
		t.Fatalf("food after append = %v", got)
	}
	apply(map[string]any{"food": []any{"thai", "none"}}, map[string]string{"food": schemas.OpRemove})
	if got := p.Tags["food"].List; !reflect.DeepEqual(got, []string{"sushi", "pizza"}) {
		t.Fatalf("food after remove = %v", got)
	}
	apply(map[string]any{"visits": 1.0, "tags": []any{"new"}}, map[string]string{"visits": schemas.OpIncrement, "tags": schemas.OpAppend})
	if p.Tags["visits"].Num != 1 || !reflect.DeepEqual(p.Tags["tags"].List, []string{"new"}) {
		t.Fatalf("ops on unset tags: visits %+v tags %+v", p.Tags["visits"], p.Tags["tags"])
	}
	// Mismatched kinds are ignored, not applied.
	if ignored := apply(map[string]any{"name": "y", "orders": []any{"a"}}, map[string]string{"name": schemas.OpIncrement, "orders": schemas.OpAppend}); ignored != 2 {
		t.Fatalf("ignored = %d, want 2", ignored)
	}
	if p.Tags["name"].Str != "x" || p.Tags["orders"].Num != 5 {
		t.Fatalf("mismatched ops changed tags: %+v", p.Tags)
	}
}
