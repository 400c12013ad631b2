package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// TestClaimMountpoint: a second daemon for the same mountpoint is refused,
// with the pid of the one that holds it; once that one is gone, the claim
// works.
func TestClaimMountpoint(t *testing.T) {
	dir := t.TempDir()
	l, err := claimMountpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = claimMountpoint(dir + "/.")
	want := fmt.Sprintf("imagefs pid %d (", os.Getpid())
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), ") still serves "+dir+"/., for processes") {
		t.Errorf("second claim: %v, want an error naming %q", err, want)
	}
	if l2, err := claimMountpoint(dir + "/other"); err != nil {
		t.Errorf("another mountpoint: %v", err)
	} else {
		l2.Close()
	}
	l.Close()
	l, err = claimMountpoint(dir)
	if err != nil {
		t.Fatalf("claim after the holder let go: %v", err)
	}
	l.Close()
}

// TestHoldersBadInput: holders of a directory that is not a mountpoint is
// an error that says so; a negative --holder-timeout is refused.
func TestHoldersBadInput(t *testing.T) {
	dir := t.TempDir()
	if err := runHolders(dir, io.Discard); err == nil || !strings.Contains(err.Error(), dir+" is not a mountpoint") {
		t.Errorf("holders of a plain directory: %v", err)
	}
	c := Config{HolderTimeout: -time.Second}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--holder-timeout -1s: must not be negative") {
		t.Errorf("negative --holder-timeout: %v", err)
	}
}
