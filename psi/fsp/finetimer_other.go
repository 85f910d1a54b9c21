//go:build !linux

package fsp

import "errors"

func newPlatformAlarm() (alarm, error) {
	return nil, errors.New("fsp: no fine timer on this platform")
}
