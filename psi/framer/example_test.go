package framer_test

import (
	"bytes"
	"fmt"

	"github.com/postsockets/postsockets/psi/framer"
)

// A message written in two parts reads back as one message.
func ExampleLengthPrefix() {
	var stream bytes.Buffer
	w := framer.LengthPrefix{}.NewWriter(&stream)
	w.WriteMessage([]byte("hello, "), false)
	w.WriteMessage([]byte("world"), true)
	w.Flush()

	r := framer.LengthPrefix{}.NewReader(&stream, 1<<20)
	var msg []byte
	buf := make([]byte, 4)
	for {
		n, end, err := r.ReadMessage(buf)
		if err != nil {
			fmt.Println(err)
			return
		}
		msg = append(msg, buf[:n]...)
		if end {
			break
		}
	}
	fmt.Printf("%q\n", msg)
	// Output: "hello, world"
}
