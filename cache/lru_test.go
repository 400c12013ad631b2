package cache

import (
	"slices"
	"testing"
)

func TestLRU(t *testing.T) {
	var l lru[string, int]
	trim := func(limit int64) []string {
		var dropped []string
		l.trim(limit, func(k string, _ int) { dropped = append(dropped, k) })
		return dropped
	}
	l.put("a", 1, 10)
	l.put("b", 2, 20)
	l.put("c", 3, 30)
	if l.len() != 3 || l.bytes != 60 {
		t.Fatalf("len %d, bytes %d; want 3, 60", l.len(), l.bytes)
	}
	if v := l.get("a"); v == nil || *v != 1 { // a is now the most recent
		t.Fatalf("get(a) = %v", v)
	}
	if v := l.peek("b"); v == nil || *v != 2 { // b stays the oldest
		t.Fatalf("peek(b) = %v", v)
	}
	if l.get("x") != nil || l.peek("x") != nil {
		t.Fatal("a missing key was found")
	}
	*l.get("c") = 33 // in place
	if *l.peek("c") != 33 {
		t.Error("a value changed in place did not stay")
	}
	l.put("b", 4, 5) // replaced: its size too, and it is the most recent
	if l.len() != 3 || l.bytes != 45 {
		t.Errorf("after a replace: len %d, bytes %d; want 3, 45", l.len(), l.bytes)
	}
	if got := trim(40); !slices.Equal(got, []string{"a"}) {
		t.Errorf("trim(40) dropped %v, want [a]", got)
	}
	if got := trim(35); got != nil {
		t.Errorf("trim(35) dropped %v with 35 bytes in", got)
	}
	l.remove("c")
	l.remove("x")
	if l.len() != 1 || l.bytes != 5 {
		t.Errorf("after remove: len %d, bytes %d; want 1, 5", l.len(), l.bytes)
	}
	l.trim(-1, nil)
	if l.len() != 0 || l.bytes != 0 {
		t.Errorf("trim(-1) left len %d, bytes %d", l.len(), l.bytes)
	}
}
