package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"

	"github.com/heraldhq/herald/schemas"
)

// errInvalidRecords makes `herald schema validate` exit non-zero.
var errInvalidRecords = errors.New("invalid records")

// runSchema is `herald schema validate [flags] FILE...`: it checks records a
// producer outside Herald means to write to a topic.
func runSchema(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "validate" {
		fmt.Fprintln(stderr, "usage: herald schema validate [-topic herald.events.v1] [-strict=true] [-keys] FILE... (- for stdin)")
		return errors.New("unknown or missing subcommand, want validate")
	}
	f := newFlags("schema validate", stderr)
	topic := f.String("topic", schemas.TopicEvents, "topic the records are meant for: "+joinList(schemas.Topics))
	strict := f.Bool("strict", true, "also refuse fields the record type does not have (the pipeline ignores them)")
	keys := f.Bool("keys", false, "print the Kafka key each valid record must be produced with")
	// The files are positional: parse flags, then take what is left.
	if err := f.Parse(args[1:]); err != nil {
		return err
	}
	if !slices.Contains(schemas.Topics, *topic) {
		return fmt.Errorf("unknown topic %q, want one of %s", *topic, joinList(schemas.Topics))
	}
	files := f.Args()
	if len(files) == 0 {
		return errors.New("no file: give one or more files of records, one JSON object per line (- for stdin)")
	}
	var total, bad int
	for _, name := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, b, err := validateFile(name, *topic, *strict, *keys, stdout)
		if err != nil {
			return err
		}
		total, bad = total+n, bad+b
	}
	fmt.Fprintf(stdout, "%d records, %d valid, %d invalid (%s)\n", total, total-bad, bad, *topic)
	if bad > 0 {
		return fmt.Errorf("%w: %d of %d", errInvalidRecords, bad, total)
	}
	return nil
}

// validateFile checks one file of newline-delimited JSON records; blank lines
// are skipped.
func validateFile(name, topic string, strict, keys bool, w io.Writer) (total, bad int, _ error) {
	var r io.Reader = os.Stdin
	if name != "-" {
		fh, err := os.Open(name)
		if err != nil {
			return 0, 0, err
		}
		defer func() { _ = fh.Close() }() // read only
		r = fh
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		total++
		key, err := schemas.ValidateRecord(topic, b, strict)
		if err != nil {
			bad++
			fmt.Fprintf(w, "%s:%d: %v\n", name, line, err)
			continue
		}
		if keys {
			fmt.Fprintf(w, "%s:%d: key %s\n", name, line, strconv.Quote(string(key)))
		}
	}
	if err := sc.Err(); err != nil {
		return total, bad, fmt.Errorf("%s: line %d: %w", name, line+1, err)
	}
	return total, bad, nil
}
