package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/daemon"
)

// versionInfo is what `deadlabourd version` prints.
type versionInfo struct {
	Version string `json:"version"`           // the module's version, with the VCS revision once
	Go      string `json:"go"`                // the Go release that built it, and the platform
	Driver  string `json:"driver"`            // the NVIDIA driver's version, or "none"
	NVML    string `json:"nvml"`              // NVML's version, or "none"
	NoNVML  string `json:"no_nvml,omitempty"` // why NVML did not load
}

func cmdVersion(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", "[--json] [--simulate h100:8]", stderr)
	asJSON := fs.Bool("json", false, "print JSON: version, go, driver, nvml")
	simulate := fs.String("simulate", "", "report the simulated driver, e.g. h100:8")
	libPath := fs.String("nvml-library", "", "path of libnvidia-ml.so.1 (default: the loader's search)")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	v := versionInfo{Version: version(), Go: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH}
	v.Driver, v.NVML, v.NoNVML = nvmlVersions(*simulate, *libPath)
	if *asJSON {
		b, _ := json.MarshalIndent(v, "", "  ")
		_, err := fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	fmt.Fprintf(stdout, "deadlabourd %s\ngo %s\nNVIDIA driver %s\nNVML %s\n", v.Version, v.Go, v.Driver, v.NVML)
	if v.NoNVML != "" {
		fmt.Fprintf(stdout, "(no NVML: %s)\n", v.NoNVML)
	}
	return nil
}

// nvmlVersions loads NVML as `run` does and asks it for the driver's and
// its own version; "none" for both, and why, when it does not load.
func nvmlVersions(simulate, libPath string) (driver, lib, why string) {
	l, err := daemon.NVMLLibrary(simulate, libPath, config.Default(), nil)
	if err != nil {
		return "none", "none", err.Error()
	}
	if ret := l.Init(); ret != nvml.SUCCESS {
		return "none", "none", ret.Error()
	}
	defer l.Shutdown()
	driver, lib = "none", "none"
	if v, ret := l.SystemGetDriverVersion(); ret == nvml.SUCCESS {
		driver = v
	}
	if v, ret := l.SystemGetNVMLVersion(); ret == nvml.SUCCESS {
		lib = v
	}
	return driver, lib, ""
}

// version is the module's version and VCS revision, from the build info.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	return versionOf(bi.Main.Version, bi.Settings)
}

// versionOf is the version main with the VCS revision appended once: not
// where main (a pseudo-version, v0.0.0-DATE-REVISION) already holds it.
func versionOf(main string, settings []debug.BuildSetting) string {
	rev, dirty := "", false
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value[:min(len(s.Value), 12)]
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" || strings.Contains(main, rev) {
		return main
	}
	if dirty {
		rev += "+dirty"
	}
	return main + " " + rev
}
