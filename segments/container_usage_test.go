package segments_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/imagefs/imagefs/segments"
	"github.com/imagefs/imagefs/segments/segmentstest"
)

func TestContainerUsage(t *testing.T) {
	ctx := context.Background()
	st := segmentstest.New()
	for _, c := range []string{"c", "other"} {
		if err := st.CreateContainer(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	put := func(c, name string, n int) {
		if _, err := st.Put(ctx, c, name, bytes.NewReader(make([]byte, n)), int64(n), "", segments.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	put("c", "a", 100)
	put("other", "b", 1000)
	c := segments.NewContainer(segments.ContainerOptions{Store: st, Name: "c", Pool: segments.NewPool(1<<20, 1)})
	for _, tc := range []struct {
		name             string
		account, contner int64 // quotas, -1: none
		want             segments.Usage
	}{
		{"no quota", -1, -1, segments.Usage{Used: 1100, Objects: 2, Quota: -1}},
		{"account quota", 5000, -1, segments.Usage{Used: 1100, Objects: 2, Quota: 5000}},
		{"container quota", -1, 3000, segments.Usage{Used: 1100, Objects: 2, Quota: 3000}},
		{"the smaller: container", 5000, 3000, segments.Usage{Used: 1100, Objects: 2, Quota: 3000}},
		{"the smaller: account", 2000, 3000, segments.Usage{Used: 1100, Objects: 2, Quota: 2000}},
		{"a zero quota is one", 0, -1, segments.Usage{Used: 1100, Objects: 2, Quota: 0}},
	} {
		st.SetQuota("", tc.account)
		st.SetQuota("c", tc.contner)
		got, err := c.Usage(ctx)
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}

	// A container shared by an ACL: the account's HEAD is 403, the
	// container's figures stand in.
	st.SetQuota("", -1)
	st.SetQuota("c", 4000)
	st.SetHook(func(op, _, _ string) error {
		if op == "HEAD-ACCOUNT" {
			return &segments.StatusError{Op: "HEAD", Object: "account", Code: 403}
		}
		return nil
	})
	got, err := c.Usage(ctx)
	if want := (segments.Usage{Used: 100, Objects: 1, Quota: 4000}); err != nil || got != want {
		t.Errorf("account HEAD forbidden: %+v, %v; want %+v", got, err, want)
	}
	// Any other failure is the caller's to handle.
	st.SetHook(func(op, _, _ string) error {
		if op == "HEAD-ACCOUNT" {
			return &segments.StatusError{Op: "HEAD", Object: "account", Code: 503}
		}
		return nil
	})
	if _, err := c.Usage(ctx); err == nil {
		t.Error("account HEAD failing with 503: no error")
	}
}
