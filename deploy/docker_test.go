package deploy

import (
	"bufio"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dockerStage is one FROM of a Dockerfile and the instructions under it.
type dockerStage struct {
	from, name string
	lines      []string // instruction lines, continuations joined
}

// parseDockerfile splits a Dockerfile into its stages (no Docker here to
// build it: this is a structural lint).
func parseDockerfile(t *testing.T, file string) []dockerStage {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages []dockerStage
	var cur string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if more, ok := strings.CutSuffix(line, "\\"); ok {
			cur += more + " "
			continue
		}
		line, cur = cur+line, ""
		if fields := strings.Fields(line); strings.EqualFold(fields[0], "FROM") {
			st := dockerStage{from: fields[1]}
			if len(fields) == 4 && strings.EqualFold(fields[2], "AS") {
				st.name = fields[3]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			t.Fatalf("%s: %q before any FROM", file, line)
		}
		stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, line)
	}
	return stages
}

func instructions(st dockerStage, name string) []string {
	var out []string
	for _, l := range st.lines {
		if kw, rest, _ := strings.Cut(l, " "); strings.EqualFold(kw, name) {
			out = append(out, strings.TrimSpace(rest))
		}
	}
	return out
}

// The Dockerfile builds with cgo in a Go of go.mod's version, and runs the
// binary on a glibc base as a non-root user, in exec form; .dockerignore
// keeps the repository's history and caches out of the context.
func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t, "../Dockerfile")
	if len(stages) != 2 || stages[0].name == "" {
		t.Fatalf("want a named build stage and a runtime stage, got %+v", stages)
	}
	build, run := stages[0], stages[1]
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mod)
	if goVersion == nil || !strings.HasPrefix(build.from, "golang:"+string(goVersion[1])) {
		t.Errorf("build stage FROM %s: want golang:%s (go.mod)", build.from, goVersion[1])
	}
	if env := strings.Join(instructions(build, "ENV"), " "); !strings.Contains(env, "CGO_ENABLED=1") {
		t.Errorf("build stage ENV %q: go-nvml needs cgo", env)
	}
	if runs := strings.Join(instructions(build, "RUN"), " "); !strings.Contains(runs, "go build") || !strings.Contains(runs, "./cmd/deadlabourd") {
		t.Errorf("build stage does not build ./cmd/deadlabourd: %q", runs)
	}
	// glibc for dlopen of libnvidia-ml.so.1: distroless base, not static.
	if !strings.HasPrefix(run.from, "gcr.io/distroless/base") || strings.HasSuffix(run.from, ":latest") {
		t.Errorf("runtime stage FROM %s: want a pinned gcr.io/distroless/base (glibc)", run.from)
	}
	if strings.Contains(build.from, "bookworm") != strings.Contains(run.from, "debian12") {
		t.Errorf("build %s and runtime %s are of different Debian releases (glibc)", build.from, run.from)
	}
	copies := instructions(run, "COPY")
	if len(copies) != 1 || !strings.HasPrefix(copies[0], "--from="+build.name+" ") {
		t.Errorf("runtime stage COPY %v: want only the binary from %s", copies, build.name)
	}
	users := instructions(run, "USER")
	if len(users) == 0 {
		t.Error("no USER in the runtime stage: it would run as root")
	} else if u, _, _ := strings.Cut(users[len(users)-1], ":"); u == "0" || u == "root" {
		t.Errorf("USER %s: want a non-root user", users[len(users)-1])
	}
	eps := instructions(run, "ENTRYPOINT")
	if len(eps) != 1 || !strings.HasPrefix(eps[0], "[") {
		t.Fatalf("ENTRYPOINT %v: want one, in exec form", eps)
	}
	if dst := strings.Fields(copies[0]); !strings.Contains(eps[0], `"`+dst[len(dst)-1]+`"`) {
		t.Errorf("ENTRYPOINT %s does not run the binary copied to %s", eps[0], dst[len(dst)-1])
	}

	ignore, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(ignore), "\n")
	for _, want := range []string{".git", ".cache", "bin"} {
		if !slices.Contains(lines, want) {
			t.Errorf(".dockerignore does not leave out %s", want)
		}
	}
}
