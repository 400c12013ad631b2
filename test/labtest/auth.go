package labtest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/applicationcredentials"

	"github.com/imagefs/imagefs/auth"
	"github.com/imagefs/imagefs/segments"
)

// TokenLifetime is the lab's Keystone token lifetime (LAB_TOKEN_EXPIRATION).
func TokenLifetime(t testing.TB) time.Duration {
	t.Helper()
	n, err := strconv.Atoi(os.Getenv("LAB_TOKEN_EXPIRATION"))
	if err != nil || n <= 0 {
		t.Fatalf("LAB_TOKEN_EXPIRATION=%q: run eval \"$(test/lab/lab.sh env)\"", os.Getenv("LAB_TOKEN_EXPIRATION"))
	}
	return time.Duration(n) * time.Second
}

// ServiceUser is the lab's service user (imagefs: roles service and
// member on project service), the trustee and the owner of service tokens.
func ServiceUser() auth.Identity {
	return auth.Identity{
		Username:          os.Getenv("LAB_SERVICE_USERNAME"),
		Password:          auth.Secret(os.Getenv("LAB_SERVICE_PASSWORD")),
		UserDomainName:    "Default",
		ProjectName:       os.Getenv("LAB_SERVICE_PROJECT_NAME"),
		ProjectDomainName: "Default",
	}
}

// ServiceUserEnv is ServiceUser as imagefs' IMAGEFS_SERVICE_* variables.
func ServiceUserEnv() []string {
	s := ServiceUser()
	return []string{
		"IMAGEFS_SERVICE_USERNAME=" + s.Username,
		"IMAGEFS_SERVICE_PASSWORD=" + string(s.Password),
		"IMAGEFS_SERVICE_USER_DOMAIN_NAME=Default",
		"IMAGEFS_SERVICE_PROJECT_NAME=" + s.ProjectName,
		"IMAGEFS_SERVICE_PROJECT_DOMAIN_NAME=Default",
	}
}

// UserToken is a fresh token of the demo user (it lives one token
// lifetime).
func UserToken(t testing.TB) auth.Secret {
	t.Helper()
	k, err := auth.New(t.Context(), LabAuth(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("demo token: %v", err)
	}
	return k.Current().Token
}

// identity is a Keystone v3 client acting with the demo user's token.
func identity(t testing.TB) (*gophercloud.ServiceClient, string) {
	t.Helper()
	pc, err := openstack.NewClient(os.Getenv("OS_AUTH_URL"))
	if err != nil {
		t.Fatal(err)
	}
	c := Keeper.Current()
	pc.SetToken(string(c.Token))
	id, err := openstack.NewIdentityV3(pc, gophercloud.EndpointOpts{})
	if err != nil {
		t.Fatal(err)
	}
	return id, c.UserID
}

// NewAppCredential creates an application credential of the demo user
// that expires after ttl (0: never), deleted when the test ends.
func NewAppCredential(t testing.TB, ttl time.Duration) (id string, secret auth.Secret) {
	t.Helper()
	client, user := identity(t)
	opts := applicationcredentials.CreateOpts{Name: fmt.Sprintf("it-%s-%d", filepath.Base(t.Name()), time.Now().UnixNano())}
	if ttl > 0 {
		e := time.Now().Add(ttl).UTC()
		opts.ExpiresAt = &e
	}
	var out struct {
		AC struct {
			ID     string `json:"id"`
			Secret string `json:"secret"`
		} `json:"application_credential"`
	}
	r := applicationcredentials.Create(context.Background(), client, user, opts)
	if r.Err != nil {
		t.Fatalf("create application credential: %v", r.Err)
	}
	if err := r.ExtractIntoStructPtr(&out, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client, user := identity(t)
		_ = applicationcredentials.Delete(context.Background(), client, user, out.AC.ID).ExtractErr()
	})
	return out.AC.ID, auth.Secret(out.AC.Secret)
}

// NewTrust runs `imagefs trust create` as the demo user for the service
// user and returns the trust id; the trust is deleted when the test ends.
func NewTrust(t testing.TB) string {
	t.Helper()
	cmd := exec.Command(Binary, "trust", "create", "--expires", "3h")
	cmd.Env = append(os.Environ(), ServiceUserEnv()...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("imagefs trust create: %v: %s", err, stderr.String())
	}
	id := strings.TrimSpace(string(out))
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(id) {
		t.Fatalf("imagefs trust create printed %q (stderr %s)", out, stderr.String())
	}
	t.Cleanup(func() { _ = DeleteTrust(id) })
	return id
}

// DeleteTrust deletes a trust of the demo user.
func DeleteTrust(id string) error {
	return auth.DeleteTrust(context.Background(), auth.TrustRequest{AuthURL: os.Getenv("OS_AUTH_URL"), Trustor: LabAuth().Identity}, id)
}

// ImageStore is direct access to the demo project's IMAGE_ account, with a
// demo token and the service user's service token, for setup and checks of
// service-token mounts. Its keeper runs until the test ends.
func ImageStore(t testing.TB) segments.ObjectStore {
	t.Helper()
	cfg := LabAuth()
	cfg.Identity = auth.Identity{}
	cfg.Token = UserToken(t)
	cfg.Service = ServiceUser()
	k, err := auth.New(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("service-token keeper: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = k.Run(ctx); close(done) }()
	raw := segments.NewSwiftStore(segments.SwiftOptions{Auth: k.Authenticator(), Transport: k.Transport(nil)})
	st := &segments.Retrying{ObjectStore: raw, P: segments.RetryPolicy{Base: 100 * time.Millisecond, Cap: time.Second, Budget: 30 * time.Second}}
	// Registered first, so it runs after the cleanups of containers made
	// with st.
	t.Cleanup(func() { cancel(); <-done })
	return st
}

// NewContainerIn is NewContainer in the account of st.
func NewContainerIn(t testing.TB, st segments.ObjectStore) string {
	t.Helper()
	name := containerName(t)
	if err := st.CreateContainer(t.Context(), name); err != nil {
		t.Fatalf("create container: %v", err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		for _, c := range []string{name, name + "_segments"} {
			var names []string
			if err := st.List(ctx, c, "", 0, func(in segments.Info) error { names = append(names, in.Name); return nil }); err != nil {
				continue
			}
			// One by one: bulk delete answers 400 on the IMAGE_ account.
			for _, n := range names {
				if err := st.Delete(ctx, c, n); err != nil {
					t.Logf("cleanup of %s/%s: %v", c, n, err)
				}
			}
		}
	})
	return name
}

// CopyThrottled copies src to dst at about rate bytes per second, in
// 64 KiB steps, like a slow `cp` into (or out of) a mount; the error of
// close(2) on dst (the commit, for a file in a mount) is returned.
func CopyThrottled(ctx context.Context, dst, src string, rate int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if err := pace(ctx, out, in, rate); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// pace copies r to w in 64 KiB steps, sleeping so as not to exceed rate.
func pace(ctx context.Context, w io.Writer, r io.Reader, rate int64) error {
	buf := make([]byte, 64<<10)
	start := time.Now()
	var done int64
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			done += int64(n)
			due := start.Add(time.Duration(float64(done) / float64(rate) * float64(time.Second)))
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Until(due)):
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// KeeperStats are the token keeper's counters, from the line it logs when
// the daemon stops ("token keeper stopped").
type KeeperStats struct {
	Renewals, Failures, Swift401, Fallbacks int
}

// KeeperStats parses the keeper's last counters from the daemon's log
// (after Stop).
func (d *Daemon) KeeperStats() KeeperStats {
	d.t.Helper()
	text := d.LogText()
	i := strings.LastIndex(text, `msg="token keeper stopped"`)
	if i < 0 {
		d.t.Fatalf("no \"token keeper stopped\" line in the daemon's log")
	}
	line := text[i:]
	if j := strings.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	num := func(key string) int {
		m := regexp.MustCompile(`\b` + key + `=(\d+)`).FindStringSubmatch(line)
		if m == nil {
			d.t.Fatalf("no %s in %q", key, line)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return KeeperStats{Renewals: num("renewals"), Failures: num("renewal_failures"), Swift401: num("swift_401"), Fallbacks: num("fallbacks")}
}

// CheckNoSecrets fails the test if the daemon's log shows any of secrets or
// anything that looks like a Keystone (fernet) token.
func (d *Daemon) CheckNoSecrets(secrets ...string) {
	d.t.Helper()
	text := d.LogText()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			d.t.Errorf("the daemon's log shows a secret (%d characters)", len(s))
		}
	}
	// Fernet tokens start with gAAAAA (version byte 0x80, base64).
	if strings.Contains(text, "gAAAAA") {
		d.t.Error("the daemon's log shows a token (gAAAAA...)")
	}
}

// OutageFile is created while a test has Keystone stopped: a courtesy
// signal to people running other tests against the same lab.
const OutageFile = "/work/keystone-outage"

// StopKeystone stops the lab's Keystone (lab.sh keystone stop) and returns
// the function that starts it again (also run at cleanup). Tests that use
// it must not be parallel: every test needing a new token is affected.
// lab.sh waits for the lab's lock, which another user of the lab may hold:
// each call is bounded.
func StopKeystone(t testing.TB) (start func()) {
	t.Helper()
	lab := func(arg string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(root, "test/lab/lab.sh"), "keystone", arg)
		cmd.Env = append(os.Environ(), "LAB_TOKEN_EXPIRATION="+strconv.Itoa(int(TokenLifetime(t).Seconds())))
		cmd.WaitDelay = 5 * time.Second
		return cmd.CombinedOutput()
	}
	// lab.sh reads the process table (ps), which blocks while some process
	// is stuck on a dead FUSE mount; a stop stuck there would go through
	// later, unattended. Refuse to start then.
	// (A ps stuck in the kernel cannot even be killed: wait in a goroutine.)
	psDone := make(chan error, 1)
	go func() { psDone <- exec.Command("ps", "-eo", "pid,stat").Run() }()
	select {
	case err := <-psDone:
		if err != nil {
			t.Fatalf("ps: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ps does not answer: a process is probably stuck on a dead FUSE mount; not stopping Keystone")
	}
	_ = os.WriteFile(OutageFile, []byte(fmt.Sprintf("Keystone stopped by %s at %s\n", t.Name(), time.Now().Format(time.RFC3339))), 0o644)
	if out, err := lab("stop"); err != nil {
		os.Remove(OutageFile)
		// It may have stopped it anyway.
		_, _ = lab("start")
		t.Fatalf("lab.sh keystone stop: %v (is the lab's lock held by another lab.sh?)\n%s", err, out)
	}
	started := false
	start = func() {
		if started {
			return
		}
		started = true
		out, err := lab("start")
		os.Remove(OutageFile)
		if err != nil {
			t.Errorf("lab.sh keystone start: %v\n%s", err, out)
		}
	}
	t.Cleanup(start)
	return start
}
