package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPeerConfig(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "peer.key")
	if err := os.WriteFile(key, []byte("0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok := func(p PeerConfig) *PeerConfig {
		if p.Timeout == 0 {
			p.Timeout = time.Second
		}
		p.Cache = sizeOf("128MiB")
		return &p
	}
	for _, tc := range []struct {
		p    PeerConfig
		want string // "" = accepted
	}{
		{PeerConfig{}, ""},
		{PeerConfig{Peers: "10.0.0.1:7474,10.0.0.2:7474", Listen: "10.0.0.1:7474", KeyFile: key}, ""},
		{PeerConfig{Peers: "a:1", KeyFile: key}, "--peers needs --peer-listen"},
		{PeerConfig{Peers: "a:1", Listen: "10.0.0.1:7474"}, "--peers needs --peer-key-file"},
		{PeerConfig{Peers: "a:1", Listen: "0.0.0.0:7474", KeyFile: key}, "not every interface"},
		{PeerConfig{Peers: "a:1", Listen: "[::]:7474", KeyFile: key}, "not every interface"},
		{PeerConfig{Peers: "a:1", Listen: "host.example:7474", KeyFile: key}, "not a name"},
		{PeerConfig{Peers: "a:1", Listen: "10.0.0.1", KeyFile: key}, "want IP:PORT"},
		{PeerConfig{Peers: "a:1", Listen: "10.0.0.1:0", KeyFile: key}, "the port must be"},
		{PeerConfig{Listen: "10.0.0.1:7474"}, "need --peers"},
	} {
		errs := ok(tc.p).validate()
		switch {
		case tc.want == "" && len(errs) != 0:
			t.Errorf("%+v: %v, want accepted", tc.p, errs)
		case tc.want != "" && (len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.want)):
			t.Errorf("%+v: %v, want one error saying %q", tc.p, errs, tc.want)
		}
	}
	for _, e := range ok(PeerConfig{Peers: "a:1", Listen: "10.0.0.1:1", KeyFile: key}).validate() {
		if strings.Contains(e.Error(), "0123456789abcdef") {
			t.Errorf("an error shows the key: %v", e)
		}
	}
}

func TestPeerResolve(t *testing.T) {
	p := PeerConfig{Peers: " 10.0.0.2:7474, 10.0.0.1:7474,10.0.0.2:7474", Listen: "10.0.0.1:7474"}
	if err := p.resolve(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.addrs, ","); got != "10.0.0.1:7474,10.0.0.2:7474" {
		t.Errorf("peers %s", got)
	}
	p = PeerConfig{Peers: "localhost:7474", Listen: "127.0.0.1:7474"}
	if err := p.resolve(context.Background()); err != nil {
		t.Fatalf("a DNS name: %v", err)
	}
	p = PeerConfig{Peers: "10.0.0.2:7474", Listen: "10.0.0.1:7474"}
	if err := p.resolve(context.Background()); err == nil || !strings.Contains(err.Error(), "is not among the peers") {
		t.Errorf("self not listed: %v", err)
	}
}
