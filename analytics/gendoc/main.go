// Command gendoc writes the queries section of docs/ANALYTICS.md from
// analytics.Queries, between the lines "<!-- queries:begin -->" and
// "<!-- queries:end -->":
//
//	go run ./analytics/gendoc docs/ANALYTICS.md
//
// analytics.TestDocHasEveryQuery fails when the doc and the queries differ.
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/heraldhq/herald/analytics"
)

const (
	begin = "<!-- queries:begin -->"
	end   = "<!-- queries:end -->"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gendoc docs/ANALYTICS.md")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "gendoc:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading doc: %w", err)
	}
	doc := string(b)
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %s ... %s section", path, begin, end)
	}
	out := doc[:i+len(begin)] + "\n\n" + section() + doc[j:]
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		return fmt.Errorf("writing doc: %w", err)
	}
	return nil
}

// section is the markdown of every query.
func section() string {
	var sb strings.Builder
	for i, q := range analytics.Queries {
		fmt.Fprintf(&sb, "### %d. %s (`%s`)\n\n%s\n\n", i+1, q.Title, q.Name, q.Doc)
		fmt.Fprintf(&sb, "Parameters, in order: %s.\n\n", strings.Join(q.Args, ", "))
		fmt.Fprintf(&sb, "```sql\n%s\n```\n\n", q.SQL)
	}
	return sb.String()
}
