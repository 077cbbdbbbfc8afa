package deploy

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// logLine is a message the code can log at info or above.
type logLine struct {
	msg, where string
}

// logLines finds the log calls of the module's code: X.Info/Warn/Error
// with a literal message, and the engine's warnOnce helper.
func logLines(t *testing.T, root string) []logLine {
	t.Helper()
	var out []logLine
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != root || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			arg := -1
			switch sel.Sel.Name {
			case "Info", "Warn", "Error":
				arg = 0
			case "warnOnce":
				arg = 1
			}
			if arg < 0 || len(call.Args) <= arg {
				return true
			}
			lit, ok := call.Args[arg].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			msg, err := strconv.Unquote(lit.Value)
			if err != nil {
				return true
			}
			out = append(out, logLine{msg, fset.Position(lit.Pos()).String()})
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Every line the daemon can log at info or above is explained in
// docs/operations.md, "Log lines".
func TestLogLinesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## Log lines\n")
	if !ok {
		t.Fatal(`docs/operations.md has no "## Log lines" section`)
	}
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	lines := logLines(t, "..")
	if len(lines) < 20 {
		t.Fatalf("found only %d log calls: is the search still right?", len(lines))
	}
	var missing []string
	for _, l := range lines {
		if !strings.Contains(section, "`"+l.msg+"`") {
			missing = append(missing, l.where+": "+l.msg)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("docs/operations.md \"Log lines\" does not explain these (add a row: level, `message`, what it means and what to do):\n%s",
			strings.Join(missing, "\n"))
	}
}
