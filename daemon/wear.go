package daemon

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/google/renameio/v2"
)

// wearMarksFile, in spool.dir, holds where each device's wear was charged
// to by the last run, so that the next charges the time between as
// unmetered idle wear (engine.Options.WearMarks).
const wearMarksFile = "wear-marks.json"

// loadWearMarks reads the last run's marks. A missing file is a first
// start; an unreadable one is logged and the downtime is not charged
// (never a reason not to start).
func (d *Daemon) loadWearMarks() map[string]time.Time {
	path := filepath.Join(d.cfg.Spool.Dir, wearMarksFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	var marks map[string]time.Time
	if err == nil {
		err = json.Unmarshal(data, &marks)
	}
	if err != nil {
		d.log.Warn("cannot read where the last run's wear ended: the downtime's wear is not charged", "file", path, "err", err)
		return nil
	}
	return marks
}

// saveWearMarks keeps this run's marks for the next, synced and renamed
// over the old file: a power loss leaves the old file or the new, whole.
func (d *Daemon) saveWearMarks(marks map[string]time.Time) error {
	data, err := json.Marshal(marks)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(d.cfg.Spool.Dir, 0o700); err != nil {
		return err
	}
	return renameio.WriteFile(filepath.Join(d.cfg.Spool.Dir, wearMarksFile), data, 0o600)
}
