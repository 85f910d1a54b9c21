package main

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/postsockets/postsockets/internal/fronttest"
)

// TestFrontHeadMemory: clients that send most of a large request head
// and never end it hold little of the front's memory. Before, the front
// took heads up to net/http's default of 1 MiB, so one address with 32
// of them (of the 256 connections it may hold) held over 31 MiB of heap
// for the 30 s a head may take, and 16 addresses 4 GiB; now a head is
// refused past -max-header-bytes (64 KiB) with 431.
func TestFrontHeadMemory(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(origin.Close)
	fronttest.LargeHeads(t, gatewaysArgs(t, origin.URL, "127.0.0.1", nil, nil, nil, nil))
}
