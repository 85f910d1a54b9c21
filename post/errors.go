package post

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Errors returned by this module wrap them, so test with
// errors.Is. The exception is a blocking call whose context ended while
// it waited (Receive, Ready, Accept, Fork and the like): as in the
// standard library it returns the context's error, context.Canceled or
// context.DeadlineExceeded, possibly wrapped; a call that gives up work
// already under way says so with a sentinel as well (SendMsg's
// ErrBackpressure, CloseContext's ErrTimeout).
var (
	ErrClosed          = errors.New("post: closed")
	ErrExpired         = errors.New("post: message lifetime expired")
	ErrMessageTooLarge = errors.New("post: message too large")
	ErrUnknownHost     = errors.New("post: unknown host")
	ErrRefused         = errors.New("post: connection refused")
	ErrTimeout         = errors.New("post: timeout")
	ErrMalformed       = errors.New("post: malformed input from peer")
	ErrBackpressure    = errors.New("post: receiver not keeping up")
	ErrPolicyConflict  = errors.New("post: policy conflict")
	ErrNotSupported    = errors.New("post: not supported by this stack")
	ErrNoCandidates    = errors.New("post: no candidate path or stack")
	ErrAuthentication  = errors.New("post: peer authentication failed")
	ErrReset           = errors.New("post: reset by peer")
	ErrDormant         = errors.New("post: carrier is dormant")
	// ErrPeerClosed: the peer closed; nothing more can be sent to it.
	ErrPeerClosed = errors.New("post: closed by peer")
	// ErrInvalid: an API call got an argument it cannot use.
	ErrInvalid = errors.New("post: invalid argument")
)

// OpError describes a failed operation on one stack and path.
type OpError struct {
	Op    string // "dial", "listen", "send", "receive", "fork", ...
	Stack string // protocol stack name, if known
	Path  string // path or address, if known
	Err   error
}

func (e *OpError) Error() string {
	s := e.Op
	if e.Stack != "" {
		s += " " + e.Stack
	}
	if e.Path != "" {
		s += " " + e.Path
	}
	msg := e.Err.Error()
	if strings.HasPrefix(msg, s+": ") {
		return msg // an OpError for the same operation, wrapped again
	}
	return s + ": " + msg
}

func (e *OpError) Unwrap() error { return e.Err }

// Timeout reports whether the error is a timeout.
func (e *OpError) Timeout() bool { return errors.Is(e.Err, ErrTimeout) }

// Errorf returns an error that wraps sentinel with a formatted detail.
func Errorf(sentinel error, format string, args ...any) error {
	return &wrapped{sentinel: sentinel, msg: fmt.Sprintf(format, args...)}
}

type wrapped struct {
	sentinel error
	msg      string
}

func (w *wrapped) Error() string { return w.sentinel.Error() + ": " + w.msg }
func (w *wrapped) Unwrap() error { return w.sentinel }
