package check

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper case
	args string
}

// parseDockerfile splits a Dockerfile into instructions: comments and
// blank lines dropped, backslash continuations joined (the parser
// directives of the first lines are comments here).
func parseDockerfile(src string) ([]instruction, error) {
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, raw := range strings.Split(src, "\n") {
		line := strings.TrimRight(raw, " \t\r")
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur.Len() > 0 && strings.HasPrefix(trimmed, "#") {
			continue // a comment inside a continued instruction
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if cont, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(cont)
			cur.WriteByte(' ')
			continue
		}
		cur.WriteString(line)
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		cmd, args, _ := strings.Cut(text, " ")
		out = append(out, instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("line %d: the file ends inside a continued instruction", start)
	}
	return out, nil
}

var (
	urlRE     = regexp.MustCompile(`(?i)\bhttps?://`)
	versionRE = regexp.MustCompile(`[0-9]`)
)

// lintDockerfile returns the rule violations of a Dockerfile: the rules
// of hadolint that matter for Herald's image.
func lintDockerfile(src string) []string {
	ins, err := parseDockerfile(src)
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	add := func(in instruction, format string, args ...any) {
		out = append(out, fmt.Sprintf("line %d (%s): %s", in.line, in.cmd, fmt.Sprintf(format, args...)))
	}
	stages := map[string]bool{}
	var froms []instruction
	user, lastUser := "", instruction{}
	staticBuild := false
	entrypoint := false
	for _, in := range ins {
		switch in.cmd {
		case "FROM":
			froms = append(froms, in)
			fields := strings.Fields(in.args)
			var image string
			for _, f := range fields {
				if !strings.HasPrefix(f, "--") {
					image = f
					break
				}
			}
			if len(fields) >= 3 && strings.EqualFold(fields[len(fields)-2], "AS") {
				stages[strings.ToLower(fields[len(fields)-1])] = true
			}
			if stages[strings.ToLower(image)] || image == "scratch" {
				break
			}
			_, tag, hasTag := strings.Cut(image[strings.LastIndex(image, "/")+1:], ":")
			switch {
			case strings.Contains(image, "@sha256:"):
			case !hasTag:
				add(in, "base image %q has no tag: pin a version (DL3006)", image)
			case tag == "latest":
				add(in, "base image %q uses latest: pin a version (DL3007)", image)
			case !versionRE.MatchString(tag) && !strings.Contains(image, "distroless"):
				add(in, "base image %q: the tag names no version", image)
			}
			user = "" // USER applies per stage
		case "ADD":
			if urlRE.MatchString(in.args) {
				add(in, "ADD of a URL: download with a checksum in RUN, or COPY (DL3020)")
			} else {
				add(in, "use COPY for files and folders (DL3020)")
			}
		case "USER":
			user, lastUser = in.args, in
		case "RUN":
			if strings.Contains(in.args, "go build") && strings.Contains(in.args, "CGO_ENABLED=0") {
				staticBuild = true
			}
			if strings.Contains(in.args, "sudo ") {
				add(in, "do not use sudo (DL3004)")
			}
		case "ENTRYPOINT", "CMD":
			var form []string
			if json.Unmarshal([]byte(in.args), &form) != nil {
				add(in, "use the JSON (exec) form, so that SIGTERM reaches herald (DL3025)")
			}
			if in.cmd == "ENTRYPOINT" {
				entrypoint = true
			}
		case "MAINTAINER":
			add(in, "MAINTAINER is deprecated (DL4000)")
		}
	}
	if len(froms) < 2 {
		out = append(out, "a multi-stage build is required: build with the Go image, run on a minimal base")
	}
	if len(froms) > 0 {
		final := froms[len(froms)-1]
		base := strings.Fields(final.args)[0]
		if !strings.Contains(base, "distroless/static") && base != "scratch" {
			add(final, "the final stage must run on a minimal base (distroless/static or scratch), got %q", base)
		}
	}
	switch uid, _, _ := strings.Cut(user, ":"); {
	case user == "":
		out = append(out, "the final stage must set USER to a non-root user (DL3002)")
	case uid == "root" || uid == "0":
		add(lastUser, "the final stage runs as root (DL3002)")
	default:
		if n, err := strconv.Atoi(uid); err != nil || n == 0 {
			add(lastUser, "USER %q: use a numeric non-zero uid, so that Kubernetes' runAsNonRoot can verify it", user)
		}
	}
	if !staticBuild {
		out = append(out, "the binary must be built static: CGO_ENABLED=0 go build")
	}
	if !entrypoint {
		out = append(out, "an ENTRYPOINT running herald is required")
	}
	return out
}

// TestDockerfile: Herald's Dockerfile passes the lint.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, problem := range lintDockerfile(string(b)) {
		t.Error(problem)
	}
	ign, err := os.ReadFile(filepath.Join("..", "..", ".dockerignore"))
	if err != nil || !strings.Contains(string(ign), ".git") {
		t.Errorf(".dockerignore must keep .git out of the build context (err %v)", err)
	}
}

// TestDockerfileLintCanFail: each rule rejects what it must.
func TestDockerfileLintCanFail(t *testing.T) {
	good := "FROM golang:1.26.8-bookworm AS build\nRUN CGO_ENABLED=0 go build -o /h ./cmd/herald\nFROM gcr.io/distroless/static-debian12:nonroot\nCOPY --from=build /h /h\nUSER 65532:65532\nENTRYPOINT [\"/h\"]\n"
	if p := lintDockerfile(good); len(p) != 0 {
		t.Fatalf("a good Dockerfile failed: %v", p)
	}
	f := func(name, src, want string) {
		t.Helper()
		problems := strings.Join(lintDockerfile(src), "\n")
		if !strings.Contains(problems, want) {
			t.Errorf("%s: problems %q, want one containing %q", name, problems, want)
		}
	}
	f("latest", strings.Replace(good, "golang:1.26.8-bookworm", "golang:latest", 1), "DL3007")
	f("untagged", strings.Replace(good, "golang:1.26.8-bookworm", "golang", 1), "DL3006")
	f("root", strings.Replace(good, "USER 65532:65532", "USER root", 1), "runs as root")
	f("no user", strings.Replace(good, "USER 65532:65532\n", "", 1), "non-root user")
	f("named user", strings.Replace(good, "USER 65532:65532", "USER herald", 1), "numeric non-zero uid")
	f("add url", strings.Replace(good, "COPY --from=build /h /h", "ADD https://example.com/h /h", 1), "ADD of a URL")
	f("cgo", strings.Replace(good, "CGO_ENABLED=0 ", "", 1), "CGO_ENABLED=0")
	f("single stage", "FROM gcr.io/distroless/static-debian12:nonroot\nUSER 65532\nRUN CGO_ENABLED=0 go build .\nENTRYPOINT [\"/h\"]\n", "multi-stage")
	f("fat base", strings.Replace(good, "gcr.io/distroless/static-debian12:nonroot", "debian:12", 1), "minimal base")
	f("shell form", strings.Replace(good, "ENTRYPOINT [\"/h\"]", "ENTRYPOINT /h", 1), "DL3025")
	f("continuation", "FROM a:1 \\", "ends inside")
}
