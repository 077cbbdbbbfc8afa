package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/deadlabour/deadlabour/admin"
	"github.com/deadlabour/deadlabour/audit"
)

// cmdAudit fetches a recent record's explanation from the running daemon's
// admin listener and prints it.
func cmdAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit", "[--config FILE | --admin HOST:PORT] [--json] [--limit N] REQUEST_ID", stderr)
	cfgPath := fs.String("config", "/etc/deadlabour/config.yaml", "configuration file (for admin.listen and admin.token_file)")
	addrFlag := fs.String("admin", "", "admin listener host:port (default: admin.listen from --config)")
	asJSON := fs.Bool("json", false, "print the daemon's JSON answer as it is")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the daemon")
	limit := fs.Int("limit", admin.RequestShowMax, fmt.Sprintf("of several records of the id, show the newest LIMIT (1 to %d)", admin.RequestShowMax))
	id, err := parseOneArg(fs, args, "REQUEST_ID")
	if err != nil {
		return err
	}
	if *limit < 1 || *limit > admin.RequestShowMax {
		return fmt.Errorf("%w: --limit %d: want 1 to %d", errUsage, *limit, admin.RequestShowMax)
	}
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	addr, token := *addrFlag, ""
	if addr == "" || explicit {
		// The config says where the admin listener is and its token.
		cfg, err := loadConfig(*cfgPath, -1)
		if err != nil {
			return fmt.Errorf("%w (or name the admin listener with --admin)", err)
		}
		if addr == "" {
			addr = cfg.Admin.Listen
		}
		if token, err = admin.ConfigToken(cfg); err != nil {
			return err
		}
	}
	if addr == "" {
		return errors.New("the admin listener is off (admin.listen is empty): the daemon cannot be asked")
	}
	client, err := admin.NewClient(addr, token, http.DefaultClient)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	query := "explain=1"
	if *limit != admin.RequestShowMax {
		query += "&limit=" + strconv.Itoa(*limit)
	}
	path, rawPath := admin.RequestPath(id)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	resp, err := client.Get(ctx, client.URL(path, rawPath, query))
	var status *admin.StatusError
	switch {
	case errors.As(err, &status):
		return status
	case err != nil:
		return fmt.Errorf("is deadlabourd running? %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if *asJSON {
		_, err := stdout.Write(body)
		return err
	}
	var doc admin.RequestDoc
	if err := json.Unmarshal(body, &doc); err != nil {
		return fmt.Errorf("the daemon's answer: %w", err)
	}
	audit.Print(stdout, id, doc)
	return nil
}
