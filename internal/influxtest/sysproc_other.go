//go:build !linux

package influxtest

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
