// Tests of the Writer beyond plain streaming (writer_test.go): the shared
// memory budget, reading back what was written, a version built on the
// previous one (Under), staging on local disk, and aborting.
package segments_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagefs/imagefs/segments"
)

// TestPoolMoreWritersThanMemory: six writers share a budget of four
// chunks (each could hold more than that in a partly filled segment), one
// of them idle with a partial segment for a while: nobody deadlocks, every
// file is intact.
func TestPoolMoreWritersThanMemory(t *testing.T) {
	st := newFake(t)
	pool := segments.NewPool(2*mib, 1) // budget: 2 segments = 4 chunks
	ctx := t.Context()
	idle := segments.NewWriter(ctx, st, "idle", segments.WriterOptions{Container: "c", Pool: pool})
	idleData := randBytes(3*mib+5, 20)
	if _, err := idle.WriteAt(ctx, idleData[:3*mib/2], 0); err != nil { // 2 chunks, partial segment
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	datas := make([][]byte, 5)
	for i := range 5 {
		datas[i] = randBytes(5*mib+i*1000, uint64(30+i))
		wg.Go(func() {
			w := segments.NewWriter(ctx, st, fmt.Sprintf("f%d", i), segments.WriterOptions{Container: "c", Pool: pool})
			for off := 0; off < len(datas[i]); off += 256 << 10 {
				end := min(off+256<<10, len(datas[i]))
				if _, err := w.WriteAt(ctx, datas[i][off:end], int64(off)); err != nil {
					errs <- err
					return
				}
			}
			errs <- w.Commit(ctx)
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("writers deadlocked on the memory budget")
	}
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := idle.WriteAt(ctx, idleData[3*mib/2:], 3*mib/2); err != nil {
		t.Fatal(err)
	}
	if err := idle.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for i, d := range datas {
		if got, _ := readBack(t, st, fmt.Sprintf("f%d", i)); !bytes.Equal(got, d) {
			t.Errorf("f%d differs", i)
		}
	}
	got, in := readBack(t, st, "idle")
	if !bytes.Equal(got, idleData) {
		t.Error("the idle file differs")
	}
	sum := sha256.Sum256(idleData)
	if in.Meta[segments.MetaSHA256] != hex.EncodeToString(sum[:]) {
		t.Error("the idle file's sha256 is wrong")
	}
}

// TestWriterReadAt: a writer reads back what it has: uploaded segments,
// open buffers, holes, and the end of the file.
func TestWriterReadAt(t *testing.T) {
	st := newFake(t)
	ctx := t.Context()
	w := segments.NewWriter(ctx, st, "f", segments.WriterOptions{Container: "c", Pool: segments.NewPool(mib, 2)})
	data := randBytes(5*mib+100, 40)
	writeAll(t, w, data[:4*mib], 300<<10)
	if _, err := w.WriteAt(ctx, data[4*mib+50:], 4*mib+50); err != nil { // a gap of 50 bytes
		t.Fatal(err)
	}
	want := bytes.Clone(data)
	clear(want[4*mib : 4*mib+50])
	for _, c := range []struct{ off, n int64 }{{0, 5*mib + 100}, {mib - 10, 20}, {4*mib - 5, 100}, {5 * mib, 100}} {
		buf := make([]byte, c.n)
		n, err := w.ReadAt(ctx, buf, c.off)
		if err != nil || !bytes.Equal(buf[:n], want[c.off:c.off+int64(n)]) || int64(n) != c.n {
			t.Errorf("ReadAt(%d, %d) = %d, %v", c.off, c.n, n, err)
		}
	}
	if n, err := w.ReadAt(ctx, make([]byte, 10), 5*mib+95); n != 5 || !errors.Is(err, io.EOF) {
		t.Errorf("ReadAt at the end = %d, %v", n, err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestWriterUnder: a new version that starts from the current one (a file
// opened without O_TRUNC) references the untouched segments, uploads only
// what was written, keeps the referenced segments and deletes the others.
func TestWriterUnder(t *testing.T) {
	st := newFake(t)
	ctx := t.Context()
	pool := segments.NewPool(mib, 2)
	w0 := segments.NewWriter(ctx, st, "f", segments.WriterOptions{Container: "c", Pool: pool})
	old := randBytes(6*mib, 50)
	writeAll(t, w0, old, mib)
	if err := w0.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	m, _, err := segments.Resolve(ctx, st, "c", "f")
	if err != nil {
		t.Fatal(err)
	}
	puts := st.Calls("PUT")
	now := time.Now()
	v := segments.NewVersions(st, segments.VersionsOptions{Container: "c", Now: func() time.Time { return now }})
	w := segments.NewWriter(ctx, st, "f", segments.WriterOptions{Container: "c", Pool: pool, Under: m, Versions: v})
	if w.Size() != 6*mib {
		t.Fatalf("size %d, want the current version's", w.Size())
	}
	patch := randBytes(100, 51)
	if _, err := w.WriteAt(ctx, patch, 2*mib+10); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6*mib)
	want := bytes.Clone(old)
	copy(want[2*mib+10:], patch)
	if _, err := w.ReadAt(ctx, buf, 0); err != nil || !bytes.Equal(buf, want) {
		t.Fatalf("ReadAt before commit: %v", err)
	}
	if err := w.Truncate(ctx, 5*mib); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(ctx, []byte("end"), 5*mib+10); err != nil { // zeros, not the old bytes
		t.Fatal(err)
	}
	want = append(want[:5*mib], make([]byte, 10)...)
	want = append(want, "end"...)
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	got, in := readBack(t, st, "f")
	if !bytes.Equal(got, want) {
		t.Fatal("content differs")
	}
	if in.Meta[segments.MetaSHA256] != "" {
		t.Error("sha256 set although the writer never read the old data")
	}
	if n := st.Calls("PUT") - puts; n > 4 { // the patch, the tail, the zero segment, the retirement record
		t.Errorf("%d PUTs for 103 bytes written", n)
	}
	// The reap of the old version: segments 0-4 stay (the new version
	// references them; 2 around the patch), 5 (cut) goes. Not while the
	// writer's hold of the old version lingers.
	if rep, err := v.Reap(ctx, segments.ReapOptions{Delete: true}); err != nil || rep.Pinned == 0 || rep.Deleted != 0 {
		t.Fatalf("reap while the writer's hold lingers: %+v, %v", rep, err)
	}
	now = now.Add(segments.DefaultLinger)
	if _, err := v.Reap(ctx, segments.ReapOptions{Delete: true}); err != nil {
		t.Fatal(err)
	}
	names := st.Names("c_segments")
	for i, seg := range m.Segments {
		kept := false
		for _, n := range names {
			kept = kept || n == seg.Object
		}
		if wantKept := i != 5; kept != wantKept {
			t.Errorf("old segment %d kept %v, want %v", i, kept, wantKept)
		}
	}
}

// TestWriterStaging: a write back into uploaded data moves the file to the
// staging disk; it then takes writes anywhere, reads them back, and
// commits an identical file with its sha256; the budget is given back.
func TestWriterStaging(t *testing.T) {
	st := newFake(t)
	ctx := t.Context()
	stg, err := segments.NewStaging(t.TempDir(), 64*mib)
	if err != nil {
		t.Fatal(err)
	}
	w := segments.NewWriter(ctx, st, "q.qcow2", segments.WriterOptions{Container: "c", Pool: segments.NewPool(mib, 2), Staging: stg})
	data := randBytes(5*mib, 60)
	writeAll(t, w, data, 256<<10)
	if w.Staged() {
		t.Fatal("staged before any backward write")
	}
	patch := randBytes(4096, 61)
	if _, err := w.WriteAt(ctx, patch, 65536); err != nil {
		t.Fatal(err)
	}
	if !w.Staged() || stg.Used() != 5*mib {
		t.Fatalf("staged %v, %d bytes used", w.Staged(), stg.Used())
	}
	copy(data[65536:], patch)
	tail := randBytes(3000, 62)
	if _, err := w.WriteAt(ctx, tail, 7*mib); err != nil { // a hole before it
		t.Fatal(err)
	}
	want := append(bytes.Clone(data), make([]byte, 2*mib)...)
	want = append(want, tail...)
	buf := make([]byte, len(want))
	if _, err := w.ReadAt(ctx, buf, 0); err != nil || !bytes.Equal(buf, want) {
		t.Fatalf("ReadAt of the staged file: %v", err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	got, in := readBack(t, st, "q.qcow2")
	if !bytes.Equal(got, want) {
		t.Fatal("content differs")
	}
	sum := sha256.Sum256(want)
	if in.Meta[segments.MetaSHA256] != hex.EncodeToString(sum[:]) {
		t.Error("sha256 wrong")
	}
	if stg.Used() != 0 {
		t.Errorf("%d staging bytes still charged", stg.Used())
	}
}

// TestWriterStagingFull: when the staging budget cannot take the file the
// write fails with ErrNoSpace, and the upload is spoiled, not published.
func TestWriterStagingFull(t *testing.T) {
	st := newFake(t)
	ctx := t.Context()
	stg, err := segments.NewStaging(t.TempDir(), 2*mib)
	if err != nil {
		t.Fatal(err)
	}
	w := segments.NewWriter(ctx, st, "q", segments.WriterOptions{Container: "c", Pool: segments.NewPool(mib, 2), Staging: stg})
	writeAll(t, w, randBytes(5*mib, 63), mib)
	if _, err := w.WriteAt(ctx, []byte("x"), 0); !errors.Is(err, segments.ErrNoSpace) {
		t.Fatalf("backward write with a full staging: %v", err)
	}
	if err := w.Commit(context.Background()); !errors.Is(err, segments.ErrNoSpace) {
		t.Fatalf("Commit = %v", err)
	}
	if _, err := st.Head(ctx, "c", "q"); err == nil {
		t.Error("published")
	}
	if stg.Used() != 0 || len(st.Names("c_segments")) != 0 {
		t.Errorf("left: %d staging bytes, segments %v", stg.Used(), st.Names("c_segments"))
	}
}

// TestReusedChunksReadAsZeros: a chunk given back with old data and taken
// again reads as zeros wherever the new writer did not write.
func TestReusedChunksReadAsZeros(t *testing.T) {
	st := newFake(t)
	ctx := t.Context()
	pool := segments.NewPool(mib, 1)
	w1 := segments.NewWriter(ctx, st, "a", segments.WriterOptions{Container: "c", Pool: pool})
	writeAll(t, w1, bytes.Repeat([]byte{0xff}, 2*mib), mib)
	if err := w1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	w2 := segments.NewWriter(ctx, st, "b", segments.WriterOptions{Container: "c", Pool: pool})
	if _, err := w2.WriteAt(ctx, []byte("hello"), 100); err != nil {
		t.Fatal(err)
	}
	if _, err := w2.WriteAt(ctx, []byte("world"), 300<<10); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 300<<10+5)
	copy(want[100:], "hello")
	copy(want[300<<10:], "world")
	if err := w2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := readBack(t, st, "b"); !bytes.Equal(got, want) {
		t.Fatal("old bytes of a reused chunk leaked into a new file")
	}
}

// TestAbortWhileWriteWaitsForMemory: uploads stall, so a WriteAt waits for
// memory holding the writer; Abort still ends the upload (and the wait)
// at once rather than when Swift answers.
func TestAbortWhileWriteWaitsForMemory(t *testing.T) {
	st := newFake(t)
	release := make(chan struct{})
	st.SetHook(func(op, c, o string) error {
		if op == "PUT" && strings.HasPrefix(o, "f/") {
			<-release // a PUT that hangs until the test ends
		}
		return nil
	})
	defer close(release)
	w := segments.NewWriter(t.Context(), st, "f", segments.WriterOptions{Container: "c", Pool: segments.NewPool(mib, 1)})
	done := make(chan error, 1)
	go func() {
		data := randBytes(8*mib, 1)
		var err error
		for off := 0; off < len(data) && err == nil; off += mib {
			_, err = w.WriteAt(context.Background(), data[off:off+mib], int64(off))
		}
		done <- err
	}()
	time.Sleep(200 * time.Millisecond) // the writes are stuck on memory
	aborted := make(chan struct{})
	go func() { w.Abort(context.Background()); close(aborted) }()
	select {
	case <-aborted:
	case <-time.After(5 * time.Second):
		t.Fatal("Abort waited for the stalled uploads")
	}
	select {
	case <-done: // done or failed, either way no longer waiting
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting write did not end")
	}
	if _, err := w.WriteAt(context.Background(), []byte("x"), 8*mib); !errors.Is(err, segments.ErrAborted) {
		t.Errorf("a write after Abort: %v, want ErrAborted", err)
	}
}
