package main

import (
	"bytes"
	"context"
	"testing"
)

func TestDemo(t *testing.T) {
	var out bytes.Buffer
	if err := demo(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	want := "/hello 200 OK: hello from 127.0.0.1:"
	if !bytes.HasPrefix(out.Bytes(), []byte(want)) || !bytes.Contains(out.Bytes(), []byte("/count 200 OK: received 1048576 bytes")) {
		t.Fatalf("output:\n%s", out.String())
	}
}
