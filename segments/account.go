package segments

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// Account is a whole Swift account seen as its containers, for a mount
// of the account: the containers a mount shows (segment containers and
// imagefs' own state left out, see Hidden) and one Container for each,
// made when it is first used. Each Container has its own Versions, with
// this host's lease and retirement records in that container's segment
// container, as a mount of that container alone would have: a mount of
// the account and mounts of its containers share every rule.
//
// Run keeps the lease and the reaping of every Versions going, of the
// containers used so far and of those used later; Close gives up this
// host's leases in all of them.
//
// All methods are safe for concurrent use.
type Account struct {
	o AccountOptions

	mu         sync.Mutex            // guards containers, run, stopped
	containers map[string]*Container // by name, once used
	run        context.Context       // Run's context, nil before Run
	stopped    bool                  // Run is waiting for its workers
	wg         sync.WaitGroup        // the Versions.Run of every container
}

// AccountOptions configure an Account.
type AccountOptions struct {
	Store ObjectStore // retries included (Retrying)
	// Container returns the options of the named container's Container,
	// Versions included (Name is set by the Account); it is called once
	// per container, when the container is first used.
	Container func(name string) ContainerOptions
}

// NewAccount returns the Account of o.
func NewAccount(o AccountOptions) *Account {
	return &Account{o: o, containers: map[string]*Container{}}
}

// SegmentSuffix ends the name of the container that holds the segments
// (and imagefs' state) of the container named without it.
const SegmentSuffix = "_segments"

// Hidden reports whether a container is kept out of an account mount: a
// segment container ("<name>_segments", whether or not <name> exists: it
// holds segments and imagefs' state, never files to show) and the name
// imagefs keeps for itself.
func Hidden(container string) bool {
	return strings.HasSuffix(container, SegmentSuffix) || container == ReservedName
}

// List calls fn with the name of every container the account shows, in
// name order (the account listing, paged; Hidden ones left out).
func (a *Account) List(ctx context.Context, fn func(name string) error) error {
	return a.o.Store.ListContainers(ctx, "", func(name string) error {
		if Hidden(name) {
			return nil
		}
		return fn(name)
	})
}

// Exists reports whether the container exists (a HEAD of it).
func (a *Account) Exists(ctx context.Context, name string) (bool, error) {
	_, err := a.o.Store.HeadContainer(ctx, name)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ErrNotFound):
		return false, nil
	}
	return false, err
}

// Create creates a container (it may exist already).
func (a *Account) Create(ctx context.Context, name string) error {
	return a.o.Store.CreateContainer(ctx, name)
}

// Container returns the Container of name, making it (and its Versions,
// started if Run is running) when it is first asked for. It does no I/O.
func (a *Account) Container(name string) *Container {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c, ok := a.containers[name]; ok {
		return c
	}
	o := a.o.Container(name)
	o.Name = name
	c := NewContainer(o)
	a.containers[name] = c
	if a.run != nil && !a.stopped {
		a.start(c)
	}
	return c
}

// start runs the upkeep of c's versions under Run's context. a.mu is held.
func (a *Account) start(c *Container) {
	ctx := a.run
	a.wg.Go(func() { _ = c.Versions().Run(ctx) })
}

// Run keeps the versions of every container used, now or later, going
// (Versions.Run: leases, reaping) until ctx ends, and returns once all of
// them have stopped.
func (a *Account) Run(ctx context.Context) error {
	a.mu.Lock()
	a.run = ctx
	for _, c := range a.containers {
		a.start(c)
	}
	a.mu.Unlock()
	<-ctx.Done()
	a.mu.Lock()
	a.stopped = true // no worker starts after this: Wait is safe
	a.mu.Unlock()
	a.wg.Wait()
	return nil
}

// Close gives up this host's lease in every container used (nothing it
// serves is open any more). It returns every error.
func (a *Account) Close(ctx context.Context) error {
	a.mu.Lock()
	cs := make([]*Container, 0, len(a.containers))
	for _, c := range a.containers {
		cs = append(cs, c)
	}
	a.mu.Unlock()
	var errs []error
	for _, c := range cs {
		if err := c.Versions().Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("container %s: %w", c.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// Used is the number of containers used so far.
func (a *Account) Used() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.containers)
}

// Usage returns the account's usage and quota (statfs of an account
// mount).
func (a *Account) Usage(ctx context.Context) (Usage, error) {
	ai, err := a.o.Store.HeadAccount(ctx)
	if err != nil {
		return Usage{}, err
	}
	return Usage{Used: ai.BytesUsed, Objects: ai.Objects, Quota: ai.QuotaBytes}, nil
}
