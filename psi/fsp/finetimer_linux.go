package fsp

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// timerfdAlarm is a timerfd read through the runtime's poller, which
// wakes on it as on a socket, without the millisecond rounding of its
// own sleeps.
type timerfdAlarm struct {
	fd  int
	f   *os.File
	buf [8]byte
}

func newPlatformAlarm() (alarm, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("timerfd_create", err)
	}
	return &timerfdAlarm{fd: fd, f: os.NewFile(uintptr(fd), "fsp-timer")}, nil
}

// set is called with the fineTimer's lock held, as is close: the
// descriptor is open.
func (a *timerfdAlarm) set(d time.Duration) error {
	its := unix.ItimerSpec{Value: unix.NsecToTimespec(max(int64(d), int64(time.Microsecond)))}
	return os.NewSyscallError("timerfd_settime", unix.TimerfdSettime(a.fd, 0, &its, nil))
}

func (a *timerfdAlarm) wait() error {
	_, err := a.f.Read(a.buf[:])
	return err
}

func (a *timerfdAlarm) close() { a.f.Close() }
