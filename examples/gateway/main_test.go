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
	for _, want := range []string{"GET /: hello from an unmodified web server: GET /, forwarded for 127.0.0.1", "GET /index.html: hello"} {
		if !bytes.Contains(out.Bytes(), []byte(want)) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}
}
