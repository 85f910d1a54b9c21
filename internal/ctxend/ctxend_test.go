package ctxend

import (
	"context"
	"testing"
	"time"
)

func TestErr(t *testing.T) {
	if err := Err(context.Background()); err != nil {
		t.Fatalf("background: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Err(ctx); err != context.Canceled {
		t.Fatalf("cancelled: %v", err)
	}
	late, stop := Late(time.Hour)
	defer stop()
	if late.Err() != nil {
		t.Fatal("a late context is done before its lag")
	}
	if err := Err(late); err != context.DeadlineExceeded {
		t.Fatalf("late: %v, want DeadlineExceeded", err)
	}
	stop()
	<-late.Done()
	if err := late.Err(); err != context.DeadlineExceeded {
		t.Fatalf("late once done: %v", err)
	}
}
