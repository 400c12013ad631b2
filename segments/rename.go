package segments

import (
	"context"
	"errors"
	"fmt"
)

// Remove removes the object in (the current version at in.Name): it
// retires the version (write-ahead), then deletes the name. Its objects go
// at a later reap, so unlink returns as soon as the name is gone.
func (v *Versions) Remove(ctx context.Context, in Info) error {
	if err := v.Retire(ctx, in, "unlink"); err != nil {
		return err
	}
	v.failpoint("unlink-after-retire")
	if err := v.st.Delete(ctx, in.Container, in.Name); err != nil {
		return fmt.Errorf("delete %s: %w", in.Name, err)
	}
	return nil
}

// Rename gives the object src the name dst in the same container. A
// version dst held is retired first; src's version is pinned (in Swift,
// before anything changes) while its manifest is copied to dst and src is
// deleted, so a reap that runs meanwhile sees the copy or the pin. After a
// crash at any point both names may exist and share objects; removing
// either retires its version, and a reap spares whatever the other still
// references.
func (v *Versions) Rename(ctx context.Context, src Info, dst string) error {
	old, err := v.st.Head(ctx, src.Container, dst)
	switch {
	case err == nil:
		if err := v.Retire(ctx, old, "rename-over"); err != nil {
			return err
		}
	case !errors.Is(err, ErrNotFound):
		return fmt.Errorf("rename %s to %s: %w", src.Name, dst, err)
	}
	v.failpoint("rename-after-retire")
	m, err := ResolveInfo(ctx, v.st, src)
	if err != nil {
		return fmt.Errorf("rename %s to %s: %w", src.Name, dst, err)
	}
	h, err := v.HoldNow(ctx, m)
	if err != nil {
		return fmt.Errorf("rename %s to %s: %w", src.Name, dst, err)
	}
	defer h.Release()
	if err := v.st.Copy(ctx, src.Container, src.Name, dst); err != nil {
		return fmt.Errorf("rename %s to %s: %w", src.Name, dst, err)
	}
	v.failpoint("rename-after-copy")
	if err := v.st.Delete(ctx, src.Container, src.Name); err != nil {
		return fmt.Errorf("rename %s to %s: delete the old name: %w", src.Name, dst, err)
	}
	return nil
}
