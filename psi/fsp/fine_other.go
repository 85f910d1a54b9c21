//go:build !(linux || darwin || freebsd)

package fsp

import "time"

func fineSleep(d time.Duration) { time.Sleep(d) }
