package labtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/roles"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/users"
)

// admin is a Keystone v3 client acting as the lab's admin (LAB_ADMIN_*).
func admin(t testing.TB) *gophercloud.ServiceClient {
	t.Helper()
	pc, err := openstack.AuthenticatedClient(context.Background(), gophercloud.AuthOptions{
		IdentityEndpoint: os.Getenv("OS_AUTH_URL"),
		Username:         os.Getenv("LAB_ADMIN_USERNAME"),
		Password:         os.Getenv("LAB_ADMIN_PASSWORD"),
		DomainName:       "Default",
		Scope:            &gophercloud.AuthScope{ProjectName: os.Getenv("LAB_ADMIN_PROJECT_NAME"), DomainName: "Default"},
	})
	if err != nil {
		t.Fatalf("admin login (LAB_ADMIN_*): %v", err)
	}
	id, err := openstack.NewIdentityV3(pc, gophercloud.EndpointOpts{})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// NewUser creates a user of its own for one test (domain Default, role
// member on the demo project, so it can use the demo account's
// containers), with password pw; it is deleted when the test ends. Tests
// that change passwords use one, never demo or imagefs.
func NewUser(t testing.TB, pw string) (name, id string) {
	t.Helper()
	c := admin(t)
	name = fmt.Sprintf("it-%s-%d", strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())), time.Now().UnixNano())
	if len(name) > 64 {
		name = name[len(name)-64:]
	}
	var u *users.User
	err := adminRetry(func() (err error) {
		// A new name each time: a create that failed may have made one.
		u, err = users.Create(context.Background(), c, users.CreateOpts{Name: name + "-" + fmt.Sprint(time.Now().UnixNano()%1000), DomainID: "default", Password: pw}).Extract()
		return err
	})
	if err != nil {
		t.Fatalf("create user %s: %v", name, err)
	}
	name = u.Name
	t.Cleanup(func() { _ = users.Delete(context.Background(), admin(t), u.ID).ExtractErr() })
	pages, err := roles.List(c, roles.ListOpts{Name: "member"}).AllPages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rs, err := roles.ExtractRoles(pages)
	if err != nil || len(rs) != 1 {
		t.Fatalf("role member: %v %v", rs, err)
	}
	if err := adminRetry(func() error {
		return roles.Assign(context.Background(), c, rs[0].ID, roles.AssignOpts{UserID: u.ID, ProjectID: Keeper.Current().ProjectID}).ExtractErr()
	}); err != nil {
		t.Fatalf("assign member on demo to %s: %v", name, err)
	}
	return name, u.ID
}

// SetPassword changes the password of user id (as the admin; Keystone
// revokes the user's tokens).
func SetPassword(t testing.TB, id, pw string) {
	t.Helper()
	c := admin(t)
	if err := adminRetry(func() error {
		_, err := users.Update(context.Background(), c, id, users.UpdateOpts{Password: pw}).Extract()
		return err
	}); err != nil {
		t.Fatalf("change the password of user %s: %v", id, err)
	}
}

// adminRetry retries an admin write a few times: the lab's Keystone runs
// on sqlite, which answers concurrent writes with "database is locked"
// (500, or a dropped connection); a 4xx is final.
func adminRetry(fn func() error) error {
	var err error
	for range 5 {
		if err = fn(); err == nil {
			return nil
		}
		var ec gophercloud.ErrUnexpectedResponseCode
		if errors.As(err, &ec) && ec.Actual/100 == 4 {
			return err
		}
		time.Sleep(time.Second)
	}
	return err
}
