package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/imagefs/imagefs/segments"
)

// gcConfig is the configuration of `imagefs gc`.
type gcConfig struct {
	Config                  // credentials (authFlags), log settings
	SegmentContainer string // default <container>_segments
	Delete           bool
	MinAge           time.Duration
}

// defaultGCMinAge protects uploads in progress. A day covers a multi-TiB
// copy that stalls for hours; an upload that still writes segments is
// young anyway (its newest segment's Last-Modified counts).
const defaultGCMinAge = 24 * time.Hour

func gcCommand() *cli.Command {
	var c gcConfig
	fl := authFlags(&c.Config)
	fl = append(fl,
		&cli.BoolFlag{Name: "delete", Destination: &c.Delete,
			Usage: "delete the orphan segments (without it, gc only lists them)"},
		&cli.DurationFlag{Name: "min-age", Value: defaultGCMinAge, Destination: &c.MinAge,
			Usage: "never touch an upload with activity more recent than this: it may still be in progress on some host"},
		&cli.StringFlag{Name: "segment-container", Destination: &c.SegmentContainer,
			Usage: "where the segments live (default: CONTAINER_segments)"},
		newSettingFlag("", "log-level", "IMAGEFS_LOG_LEVEL", "warn", &c.LogLevel,
			"debug, info, warn or error (logs go to stderr, the report to stdout)"),
	)
	return &cli.Command{
		Name:      "gc",
		Usage:     "find (and with --delete remove) segments that no manifest references",
		ArgsUsage: "CONTAINER",
		Description: "Lists the segments in CONTAINER_segments that no SLO or DLO manifest in CONTAINER\n" +
			"references: leftovers of uploads that were interrupted (a crash, a kill -9) or of\n" +
			"versions whose segments could not be deleted. Uploads with activity more recent than\n" +
			"--min-age are never touched. Without --delete nothing is changed.",
		Flags: fl,
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return &usageError{msg: err.Error(), cmd: "gc"}
		},
		Action: func(cc *cli.Context) error {
			if cc.NArg() != 1 {
				return &usageError{msg: fmt.Sprintf("gc needs exactly one CONTAINER, got %d argument(s)", cc.NArg()), cmd: "gc"}
			}
			c.Container = cc.Args().Get(0)
			return runGC(cc.Context, &c, os.Stdout)
		},
	}
}

func runGC(parent context.Context, c *gcConfig, out io.Writer) error {
	if c.Container == "" || strings.Contains(c.Container, "/") {
		return &usageError{msg: fmt.Sprintf("%q is not a container name (gc works on a whole container, without a prefix)", c.Container), cmd: "gc"}
	}
	if c.MinAge < 0 {
		return &usageError{msg: fmt.Sprintf("--min-age %v: must not be negative", c.MinAge), cmd: "gc"}
	}
	if err := errors.Join(c.resolveAuth(), c.Auth.Validate()); err != nil {
		return err
	}
	if err := c.LogLevel.Err(); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: c.LogLevel.Level()}))
	ctx, stop := signal.NotifyContext(parent, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	keeper, raw, err := login(ctx, &c.Config, log, nil)
	if err != nil {
		return err
	}
	if err := checkContainer(ctx, raw, keeper, c.Container, false); err != nil {
		return err
	}
	st := &segments.Retrying{ObjectStore: raw, P: segments.DefaultRetryPolicy, Log: log}
	v := segments.NewVersions(st, segments.VersionsOptions{Container: c.Container, SegmentContainer: c.SegmentContainer,
		Host: "gc", Log: log, Failpoint: failpoint(log)})
	now := time.Now()
	// Retired versions first: every host's records older than --min-age,
	// minus what a manifest references or a live lease pins.
	vrep, err := v.Reap(ctx, segments.ReapOptions{MinAge: c.MinAge, Delete: c.Delete})
	if err != nil {
		return fmt.Errorf("gc %s: retired versions: %v", c.Container, err)
	}
	reportVersions(out, vrep, c, now)
	// Boot traces of versions that are gone (the object changed or was
	// removed): small, never referenced by a manifest, so no orphan scan
	// sees them.
	stale, err := v.PruneTraces(ctx, !c.Delete)
	switch {
	case err != nil:
		return fmt.Errorf("gc %s: boot traces: %v", c.Container, err)
	case stale > 0 && c.Delete:
		fmt.Fprintf(out, "boot traces: deleted %d of versions that are gone\n", stale)
	case stale > 0:
		fmt.Fprintf(out, "boot traces: %d of versions that are gone; run again with --delete to remove them\n", stale)
	}
	o := segments.GCOptions{Container: c.Container, SegmentContainer: c.SegmentContainer, MinAge: c.MinAge, Protected: vrep.Protected}
	rep, err := segments.FindOrphans(ctx, st, o)
	if err != nil {
		return fmt.Errorf("gc %s: %v (no orphan was deleted)", c.Container, err)
	}
	fmt.Fprintf(out, "container %s: %d objects, %d large-object manifests\n", rep.Container, rep.Objects, rep.Manifests)
	fmt.Fprintf(out, "segment container %s: %d objects, %d referenced, %d retired or held\n", rep.SegmentContainer, rep.Segments, rep.Referenced, rep.Protected)
	for _, u := range rep.Orphans {
		fmt.Fprintf(out, "orphan  %s/%s  %d objects, %s, last activity %s\n",
			rep.SegmentContainer, u.Prefix, len(u.Objects), bytesText(u.Bytes), ageText(now, u.Newest))
	}
	for _, u := range rep.Young {
		fmt.Fprintf(out, "young   %s/%s  %d objects, %s, last activity %s: left alone (younger than --min-age %v)\n",
			rep.SegmentContainer, u.Prefix, len(u.Objects), bytesText(u.Bytes), ageText(now, u.Newest), c.MinAge)
	}
	n, size := rep.OrphanSegments()
	switch {
	case n == 0:
		fmt.Fprintln(out, "no orphan segments")
		return nil
	case !c.Delete:
		fmt.Fprintf(out, "%d orphan objects (%s) in %d uploads; run again with --delete to remove them\n", n, bytesText(size), len(rep.Orphans))
		return nil
	}
	// The leases and records again, just before deleting: a host may have
	// opened a version since.
	fresh, err := v.Reap(ctx, segments.ReapOptions{MinAge: 1 << 62})
	if err != nil {
		return fmt.Errorf("gc %s: %v (no orphan was deleted)", c.Container, err)
	}
	o.Protected = fresh.Protected
	deleted, err := segments.DeleteOrphans(ctx, st, rep, o)
	if err != nil {
		return fmt.Errorf("gc %s: %v", c.Container, err)
	}
	fmt.Fprintf(out, "deleted %d orphan objects (%s) in %d uploads\n", deleted, bytesText(size), len(rep.Orphans))
	if deleted < n {
		fmt.Fprintf(out, "%d objects were spared: a manifest referenced them by the time of deletion\n", n-deleted)
	}
	return nil
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

func ageText(now, t time.Time) string {
	if t.IsZero() {
		return "unknown"
	}
	return fmt.Sprintf("%s (%v ago)", t.UTC().Format(time.RFC3339), now.Sub(t).Round(time.Second))
}

// reportVersions prints what the reap of retired versions found and did.
func reportVersions(out io.Writer, r *segments.ReapReport, c *gcConfig, now time.Time) {
	fmt.Fprintf(out, "retired versions: %d records, %d due (older than --min-age %v); leases: %d live of %d\n",
		r.Records, r.Due, c.MinAge, r.LiveLeases, r.Leases)
	for _, d := range r.DueRecords {
		fmt.Fprintf(out, "due     %s (%s by %s, %d objects, retired %s)\n", d.Object, d.Why, d.Host, d.Objects, ageText(now, d.Retired))
	}
	for _, w := range r.Waiting {
		fmt.Fprintf(out, "waiting %s (%s by %s, %d objects, retired %s): left alone\n", w.Object, w.Why, w.Host, w.Objects, ageText(now, w.Retired))
	}
	switch {
	case r.Due == 0:
	case !c.Delete:
		fmt.Fprintf(out, "%d retired versions are due; run again with --delete to remove them\n", r.Due)
	default:
		fmt.Fprintf(out, "deleted %d objects of %d retired versions; spared %d still referenced and %d held open by a host\n",
			r.Deleted, r.Done, r.Referenced, r.Pinned)
	}
}
