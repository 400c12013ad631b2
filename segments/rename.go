package segments

import (
	"context"
	"fmt"
)

// Rename gives the object described by src the name dst in the same
// container, copying only its manifest (or the object itself, if plain),
// then removing the old name. A version that dst held before is removed
// with its segments.
func Rename(ctx context.Context, st ObjectStore, src Info, dst string) error {
	var garbage map[string][]string
	if old, err := st.Head(ctx, src.Container, dst); err == nil && old.SLO {
		if garbage, err = sloObjects(ctx, st, old.Container, old.Name, 0); err != nil {
			return fmt.Errorf("rename over %s: %w", dst, err)
		}
	}
	if err := st.Copy(ctx, src.Container, src.Name, dst); err != nil {
		return fmt.Errorf("rename %s to %s: %w", src.Name, dst, err)
	}
	if err := st.Delete(ctx, src.Container, src.Name); err != nil {
		return fmt.Errorf("rename %s to %s: delete the old name: %w", src.Name, dst, err)
	}
	// The renamed manifest may reference segments of the old dst only if
	// they were the same object; never delete those.
	if src.SLO {
		mine, err := sloObjects(ctx, st, src.Container, dst, 0)
		if err != nil {
			return nil // garbage stays for gc rather than risk the new data
		}
		for c, objs := range garbage {
			garbage[c] = without(objs, mine[c])
		}
	}
	return deleteGroups(ctx, st, garbage)
}

func without(objs, drop []string) []string {
	set := make(map[string]bool, len(drop))
	for _, d := range drop {
		set[d] = true
	}
	out := objs[:0]
	for _, o := range objs {
		if !set[o] {
			out = append(out, o)
		}
	}
	return out
}
