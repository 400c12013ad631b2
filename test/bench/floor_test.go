//go:build integration

package bench

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"fmt"
	"hash"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/fs"
)

// The CPU floor (issue 14): what moving a GiB through the daemon must cost
// at least, measured on this machine in the same run as the daemon's own
// CPU per GiB. The hashing the write path must do (an MD5 per segment for
// its ETag, the SHA-256 of the file), and FUSE's own cost: a go-fuse
// filesystem that does nothing with the bytes (a sink for writes, one
// static buffer for reads), mounted with imagefs's options (1 MiB READs
// and WRITEs, the same kernel readahead), moving 1 GiB with dd.

// floor is the CPU seconds per GiB of each part.
type floor struct {
	md5, sha256         float64
	fuseWrite, fuseRead float64
}

func (f floor) String() string {
	return fmt.Sprintf("floor CPU s/GiB: MD5 %.2f, SHA-256 %.2f, FUSE write %.2f, FUSE read %.2f", f.md5, f.sha256, f.fuseWrite, f.fuseRead)
}

// writeFloor is the floor of a write: MD5, FUSE, and SHA-256 unless off.
func (f floor) writeFloor(sha bool) float64 {
	v := f.md5 + f.fuseWrite
	if sha {
		v += f.sha256
	}
	return v
}

// measureFloor measures the floor; each part is the best of rounds.
func measureFloor(b *testing.B, rounds int) floor {
	var f floor
	for r := range rounds {
		x := floor{md5: hashCPU(md5.New()), sha256: hashCPU(sha256.New())}
		x.fuseWrite, x.fuseRead = fuseSinkCPU(b)
		if r == 0 {
			f = x
			continue
		}
		f.md5, f.sha256 = min(f.md5, x.md5), min(f.sha256, x.sha256)
		f.fuseWrite, f.fuseRead = min(f.fuseWrite, x.fuseWrite), min(f.fuseRead, x.fuseRead)
	}
	b.Log(f)
	return f
}

// hashCPU is the CPU seconds per GiB of h on this machine (its thread's
// own CPU time, so that other load does not count).
func hashCPU(h hash.Hash) float64 {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, 1<<20)
	const n = 512 // MiB
	t0 := threadCPU()
	for range n {
		h.Write(buf)
	}
	h.Sum(nil)
	return (threadCPU() - t0) * 1024 / n
}

func threadCPU() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_THREAD, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// fuseSinkCPU mounts a sink filesystem in this process and returns its CPU
// seconds per GiB for dd bs=1M writing 1 GiB to it, and reading 1 GiB
// (buffered, through the kernel's readahead) from it.
func fuseSinkCPU(b *testing.B) (write, read float64) {
	dir := b.TempDir()
	root := &sinkRoot{}
	srv, err := fusefs.Mount(dir, root, &fusefs.Options{MountOptions: fuse.MountOptions{
		FsName: "sink", Name: "imagefs-sink", MaxWrite: 1 << 20, MaxBackground: 128,
		DisableSplice: true, DirectMount: true}})
	if err != nil {
		b.Fatalf("mount the FUSE sink: %v", err)
	}
	defer srv.Unmount()
	if err := fs.SetKernelReadahead(dir, 16<<20); err != nil {
		b.Fatalf("FUSE sink readahead: %v", err)
	}
	dd := func(args ...string) float64 {
		c0 := processCPU()
		if out, err := exec.Command("dd", append(args, "bs=1M", "count=1024", "status=none")...).CombinedOutput(); err != nil {
			b.Fatalf("dd on the FUSE sink: %v: %s", err, out)
		}
		return processCPU() - c0
	}
	write = dd("if=/dev/zero", "of="+dir+"/sink", "conv=notrunc")
	read = dd("if="+dir+"/sink", "of=/dev/null")
	return write, read
}

type sinkRoot struct{ fusefs.Inode }

func (r *sinkRoot) OnAdd(ctx context.Context) {
	ch := r.NewPersistentInode(ctx, &sinkFile{}, fusefs.StableAttr{Mode: syscall.S_IFREG})
	r.AddChild("sink", ch, false)
}

// sinkFile is 1 GiB of zeros that takes any write and forgets it.
type sinkFile struct{ fusefs.Inode }

var (
	sinkZeros = make([]byte, 1<<20)
	_         = (fusefs.NodeReader)((*sinkFile)(nil))
	_         = (fusefs.NodeWriter)((*sinkFile)(nil))
	_         = (fusefs.NodeOpener)((*sinkFile)(nil))
	_         = (fusefs.NodeGetattrer)((*sinkFile)(nil))
	_         = (fusefs.NodeSetattrer)((*sinkFile)(nil))
)

func (f *sinkFile) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	return nil, 0, 0
}

func (f *sinkFile) Getattr(ctx context.Context, fh fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o666
	out.Size = 1 << 30
	out.SetTimeout(time.Hour)
	return 0
}

func (f *sinkFile) Setattr(ctx context.Context, fh fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return f.Getattr(ctx, fh, out)
}

func (f *sinkFile) Read(ctx context.Context, fh fusefs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n := min(int64(len(dest)), int64(len(sinkZeros)), max(1<<30-off, 0))
	return fuse.ReadResultData(sinkZeros[:n]), 0
}

func (f *sinkFile) Write(ctx context.Context, fh fusefs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	return uint32(len(data)), 0
}

// profileEnv is the environment of a mount that measures what name says:
// with BENCH_PROFILE_DIR set, the daemon writes a CPU profile of its whole
// run there (IMAGEFS_CPUPROFILE), <name>.pprof; read it with
// `go tool pprof -top imagefs <file>`.
func profileEnv(name string) []string {
	dir := os.Getenv("BENCH_PROFILE_DIR")
	if dir == "" {
		return nil
	}
	return []string{"IMAGEFS_CPUPROFILE=" + filepath.Join(dir, name+".pprof")}
}
