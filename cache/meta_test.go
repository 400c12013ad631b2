package cache

import (
	"testing"
	"time"
)

func TestMetaPutAtAfterForget(t *testing.T) {
	now := time.Unix(1000, 0)
	c := NewMeta[string, int](time.Second)
	c.Now = func() time.Time { return now }

	before := now // a listing page is requested
	now = now.Add(time.Millisecond)
	c.Forget("a") // this mount commits a
	now = now.Add(time.Millisecond)
	c.PutAt("a", 1, true, before, 10*time.Second)
	if _, _, found := c.Get("a"); found {
		t.Fatal("an answer read before a Forget was cached after it")
	}
	after := now
	c.PutAt("a", 2, true, after, 10*time.Second)
	if v, ok, found := c.Get("a"); !found || !ok || v != 2 {
		t.Fatalf("an answer read after the Forget: %v %v %v", v, ok, found)
	}
	c.PutAt("b", 3, true, before, 10*time.Second) // another key: kept
	if _, _, found := c.Get("b"); !found {
		t.Fatal("a Forget of a dropped the answer about b")
	}

	// The tombstone outlives the longest ttl in use: a very late answer
	// from before the Forget is still refused.
	c.Forget("b")
	now = now.Add(5 * time.Second)
	c.PutAt("b", 4, true, before, 10*time.Second)
	if _, _, found := c.Get("b"); found {
		t.Fatal("a late answer read before the Forget was cached")
	}
}

func TestMetaAgeFromMark(t *testing.T) {
	now := time.Unix(1000, 0)
	c := NewMeta[string, int](time.Second)
	c.Now = func() time.Time { return now }
	m := now
	now = now.Add(3 * time.Second) // a long listing
	c.PutAt("x", 1, true, m, 2*time.Second)
	if _, _, found := c.Get("x"); found {
		t.Fatal("an answer older than its ttl was cached")
	}
	c.PutAt("y", 1, true, m, 4*time.Second)
	now = now.Add(999 * time.Millisecond)
	if _, _, found := c.Get("y"); !found {
		t.Fatal("an answer within its ttl is gone")
	}
	now = now.Add(time.Millisecond)
	if _, _, found := c.Get("y"); found {
		t.Fatal("an answer past its ttl (counted from its Mark) is still there")
	}
}

func TestMetaBounded(t *testing.T) {
	c := NewMeta[int, int](time.Hour)
	c.Max = 1000
	for i := range 5000 {
		c.Put(i, i)
	}
	if n := len(c.m); n > 1000 {
		t.Fatalf("%d entries, Max is 1000", n)
	}
	if _, _, found := c.Get(4999); !found {
		t.Fatal("the newest entry was dropped")
	}
}
