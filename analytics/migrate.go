package analytics

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationsTable records the applied migrations. MergeTree rather than a
// Log engine so that two herald processes migrating at once cannot corrupt
// it; a version recorded twice is harmless (versions are read distinct).
const migrationsTable = `CREATE TABLE IF NOT EXISTS herald_migrations
(
    version UInt32,
    name String,
    applied DateTime
)
ENGINE = MergeTree()
ORDER BY version`

// migration is one file of migrations/.
type migration struct {
	version    uint32
	name       string // file name without .sql, e.g. 0001_init
	statements []string
}

var migrationName = regexp.MustCompile(`^([0-9]{4})_([a-z0-9_]+)\.sql$`)

// Migrate applies the embedded migrations not yet recorded in
// herald_migrations, in version order, and returns the names of those it
// applied (none when the schema is current). It is safe to run at every
// start. A migration is recorded only after all its statements succeeded.
func Migrate(ctx context.Context, conn driver.Conn, log *slog.Logger) (applied []string, err error) {
	ms, err := loadMigrations(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	return migrate(ctx, conn, log, ms)
}

func migrate(ctx context.Context, conn driver.Conn, log *slog.Logger, ms []migration) ([]string, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := conn.Exec(ctx, migrationsTable); err != nil {
		return nil, fmt.Errorf("creating herald_migrations: %w", err)
	}
	done, err := appliedVersions(ctx, conn)
	if err != nil {
		return nil, err
	}
	known := make(map[uint32]bool, len(ms))
	for _, m := range ms {
		known[m.version] = true
	}
	for v := range done {
		if !known[v] {
			log.Warn("database has a migration this build does not know; a newer herald migrated it", "version", v)
		}
	}
	var applied []string
	for _, m := range ms {
		if done[m.version] {
			continue
		}
		start := time.Now()
		for i, stmt := range m.statements {
			skip, err := columnExists(ctx, conn, stmt)
			if err != nil {
				return applied, fmt.Errorf("applying migration %s, statement %d of %d: %w", m.name, i+1, len(m.statements), err)
			}
			if skip {
				continue
			}
			if err := conn.Exec(ctx, stmt); err != nil {
				return applied, fmt.Errorf("applying migration %s, statement %d of %d: %w", m.name, i+1, len(m.statements), err)
			}
		}
		if err := recordMigration(ctx, conn, m); err != nil {
			return applied, err
		}
		log.Info("applied migration", "migration", m.name, "statements", len(m.statements), "took", time.Since(start).Round(time.Millisecond))
		applied = append(applied, m.name)
	}
	return applied, nil
}

// addColumn matches an ALTER TABLE t ADD COLUMN c statement (after any
// leading comment lines).
var addColumn = regexp.MustCompile(`(?is)^(?:\s*--[^\n]*\n)*\s*ALTER\s+TABLE\s+([A-Za-z_][A-Za-z0-9_]*)\s+ADD\s+COLUMN\s+([A-Za-z_][A-Za-z0-9_]*)\s`)

// columnExists reports whether stmt is an ALTER TABLE ... ADD COLUMN whose
// column the table has already: ClickHouse 18.16 has no ADD COLUMN IF NOT
// EXISTS, so a migration interrupted after it would fail on the re-run.
func columnExists(ctx context.Context, conn driver.Conn, stmt string) (bool, error) {
	m := addColumn.FindStringSubmatch(stmt)
	if m == nil {
		return false, nil
	}
	var n uint64
	err := conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = ? AND name = ?", m[1], m[2]).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("checking for column %s.%s: %w", m[1], m[2], err)
	}
	return n > 0, nil
}

func appliedVersions(ctx context.Context, conn driver.Conn) (map[uint32]bool, error) {
	rows, err := conn.Query(ctx, "SELECT DISTINCT version FROM herald_migrations")
	if err != nil {
		return nil, fmt.Errorf("reading herald_migrations: %w", err)
	}
	defer rows.Close()
	done := make(map[uint32]bool)
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("reading herald_migrations: %w", err)
		}
		done[v] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading herald_migrations: %w", err)
	}
	return done, nil
}

func recordMigration(ctx context.Context, conn driver.Conn, m migration) error {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO herald_migrations (version, name, applied)")
	if err != nil {
		return fmt.Errorf("recording migration %s: %w", m.name, err)
	}
	if err := b.Append(m.version, m.name, time.Now().UTC()); err != nil {
		_ = b.Abort()
		return fmt.Errorf("recording migration %s: %w", m.name, err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("recording migration %s: %w", m.name, err)
	}
	return nil
}

// loadMigrations reads the NNNN_name.sql files of dir in fsys, sorted by
// version. Any other file, a version used twice, version 0 or a file without
// statements is an error.
func loadMigrations(fsys fs.FS, dir string) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("reading migrations: %w", err)
	}
	var ms []migration
	seen := make(map[uint32]string)
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		sub := migrationName.FindStringSubmatch(e.Name())
		if sub == nil {
			return nil, fmt.Errorf("reading migrations: %q is not named NNNN_name.sql", e.Name())
		}
		v, _ := strconv.ParseUint(sub[1], 10, 32) // four digits: cannot fail
		if v == 0 {
			return nil, fmt.Errorf("reading migrations: %s: versions start at 0001", e.Name())
		}
		if prev, ok := seen[uint32(v)]; ok {
			return nil, fmt.Errorf("reading migrations: %s and %s have the same version", prev, e.Name())
		}
		seen[uint32(v)] = e.Name()
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("reading migration %s: %w", e.Name(), err)
		}
		stmts := splitStatements(string(b))
		if len(stmts) == 0 {
			return nil, fmt.Errorf("reading migration %s: no statements", e.Name())
		}
		ms = append(ms, migration{version: uint32(v), name: strings.TrimSuffix(e.Name(), ".sql"), statements: stmts})
	}
	slices.SortFunc(ms, func(a, b migration) int { return int(a.version) - int(b.version) })
	return ms, nil
}

// splitStatements splits a migration file at lines holding only ';'. A
// trailing ';' at the end of a statement's last line is dropped too, and
// parts holding only comments and blank lines are skipped (ClickHouse refuses
// an empty query).
func splitStatements(src string) []string {
	var (
		out []string
		cur []string
	)
	flush := func() {
		stmt := strings.TrimSpace(strings.Join(cur, "\n"))
		stmt = strings.TrimSpace(strings.TrimSuffix(stmt, ";"))
		cur = cur[:0]
		if hasCode(stmt) {
			out = append(out, stmt)
		}
	}
	for _, line := range strings.Split(src, "\n") {
		if strings.TrimSpace(line) == ";" {
			flush()
			continue
		}
		cur = append(cur, strings.TrimRight(line, "\r"))
	}
	flush()
	return out
}

// hasCode reports whether stmt holds anything but blank lines and -- comments.
func hasCode(stmt string) bool {
	for _, line := range strings.Split(stmt, "\n") {
		l := strings.TrimSpace(line)
		if l != "" && !strings.HasPrefix(l, "--") {
			return true
		}
	}
	return false
}
