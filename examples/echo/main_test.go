package main

import (
	"context"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/psi"
)

func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := demo(ctx, &carrier.Config{Security: psi.Security{PSK: []byte("echo demo test key")}}); err != nil {
		t.Fatal(err)
	}
}
