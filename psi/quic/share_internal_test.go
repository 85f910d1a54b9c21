package quic

import (
	"reflect"
	"testing"
)

// TestOverCopiesSettings: a stack run over a given socket keeps every
// setting of the stack it came from.
func TestOverCopiesSettings(t *testing.T) {
	s := &Stack{MaxHandshakes: 1, MaxHandshakesPerSource: 2, MaxHandshakeRate: 3, MaxStreams: 4}
	st := s.over(nil)
	v, w := reflect.ValueOf(s).Elem(), reflect.ValueOf(st).Elem()
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if !f.IsExported() || f.Type.Kind() == reflect.Func {
			continue
		}
		if !reflect.DeepEqual(v.Field(i).Interface(), w.Field(i).Interface()) {
			t.Errorf("over drops Stack.%s", f.Name)
		}
	}
	if st.tokenStore(false) != s.tokenStore(false) {
		t.Error("over does not share the stack's address tokens")
	}
}
