package fs

import (
	"sort"
	"sync/atomic"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/segments"
)

// What the mount is doing, for status and metrics: counters of the FUSE
// traffic and of commits, the uploads in progress, and the latency of
// every FUSE operation. The package only counts; cmd exports.

// Stats are the mount's counters since it started.
type Stats struct {
	ReadBytes, WrittenBytes int64 // through FUSE (READ and WRITE requests)
	Commits                 int64 // close(2) that published a new version
	CommitFailures          int64 // close(2) that returned an error: nothing published
	Abandoned               int64 // uploads abandoned (writer killed, shutdown timeout)
	Passthroughs            int64 // opens the kernel reads from the disk cache's whole file
	// PassthroughNewInodes counts names given a new inode because their
	// old one passes through a version the name no longer leads to.
	PassthroughNewInodes int64
	// Boot traces (trace.go): stored, replayed, bytes read ahead by replays.
	TracesRecorded, TracesReplayed, TraceBytes int64
}

// stats are the counters of Stats.
type stats struct {
	readBytes, writtenBytes atomic.Int64
	commits, commitFailures atomic.Int64
	abandoned               atomic.Int64
}

// Stats returns the mount's counters.
func (r *Root) Stats() Stats {
	s := &r.stats
	return Stats{ReadBytes: s.readBytes.Load(), WrittenBytes: s.writtenBytes.Load(), Commits: s.commits.Load(),
		CommitFailures: s.commitFailures.Load(), Abandoned: s.abandoned.Load(), Passthroughs: r.o.pt.opens.Load(),
		PassthroughNewInodes: r.o.pt.detached.Load(),
		TracesRecorded:       r.traces.recorded.Load(), TracesReplayed: r.traces.replayed.Load(), TraceBytes: r.traces.replayBytes.Load()}
}

// Upload is a file being written.
type Upload struct {
	Path string // relative to the mount
	segments.Progress
}

// UploadList lists the files being written, by path.
func (r *Root) UploadList() []Upload {
	r.mu.Lock()
	files := make([]*fileNode, 0, len(r.writing))
	for _, f := range r.writing {
		files = append(files, f)
	}
	r.mu.Unlock()
	var out []Upload
	for _, f := range files {
		if p, ok := f.progress(); ok {
			out = append(out, Upload{Path: f.path(), Progress: p})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// progress is the file's upload in progress, if any.
func (f *fileNode) progress() (segments.Progress, bool) {
	f.mu.Lock()
	w := f.w
	f.mu.Unlock()
	if w == nil {
		return segments.Progress{}, false
	}
	return w.Progress(), true
}

// Mount mounts the filesystem on dir, as fusefs.Mount does, and reports
// the time every FUSE request took to lat (nil: not measured), under
// the operation's name: "lookup", "read", "write", "flush", ...
func (r *Root) Mount(dir string, opts *fusefs.Options, lat fuse.LatencyMap) (*fuse.Server, error) {
	return mount(dir, r, &r.stats, opts, lat, r.o)
}

// mount mounts the tree of top on dir, counting its FUSE traffic in st.
func mount(dir string, top fusefs.InodeEmbedder, st *stats, opts *fusefs.Options, lat fuse.LatencyMap, o Options) (*fuse.Server, error) {
	raw := fusefs.NewNodeFS(top, opts)
	if lat == nil {
		lat = noLatencies{}
	}
	server, err := fuse.NewServer(&timedFS{RawFileSystem: raw, lat: lat, st: st}, dir, &opts.MountOptions)
	if err != nil {
		return nil, err
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		return nil, err
	}
	o.pt.start(server, o)
	return server, nil
}

type noLatencies struct{}

func (noLatencies) Add(string, time.Duration) {}

// timedFS measures the requests that matter for an image store; the
// others pass through unmeasured.
type timedFS struct {
	fuse.RawFileSystem
	lat fuse.LatencyMap
	st  *stats
}

func (t *timedFS) since(op string, start time.Time) { t.lat.Add(op, time.Since(start)) }

func (t *timedFS) Lookup(c <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	defer t.since("lookup", time.Now())
	return t.RawFileSystem.Lookup(c, h, name, out)
}

func (t *timedFS) GetAttr(c <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	defer t.since("getattr", time.Now())
	return t.RawFileSystem.GetAttr(c, in, out)
}

func (t *timedFS) SetAttr(c <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	defer t.since("setattr", time.Now())
	return t.RawFileSystem.SetAttr(c, in, out)
}

func (t *timedFS) Open(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer t.since("open", time.Now())
	return t.RawFileSystem.Open(c, in, out)
}

func (t *timedFS) Create(c <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	defer t.since("create", time.Now())
	return t.RawFileSystem.Create(c, in, name, out)
}

func (t *timedFS) Read(c <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	defer t.since("read", time.Now())
	res, st := t.RawFileSystem.Read(c, in, buf)
	if st == fuse.OK && res != nil {
		t.st.readBytes.Add(int64(res.Size()))
	}
	return res, st
}

func (t *timedFS) Write(c <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	defer t.since("write", time.Now())
	n, st := t.RawFileSystem.Write(c, in, data)
	t.st.writtenBytes.Add(int64(n))
	return n, st
}

// Writev: the server tries it first and falls back to Write on ENOSYS.
func (t *timedFS) Writev(c <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	start := time.Now()
	n, st := t.RawFileSystem.Writev(c, in, data)
	if st != fuse.ENOSYS {
		t.since("write", start)
		t.st.writtenBytes.Add(int64(n))
	}
	return n, st
}

func (t *timedFS) Flush(c <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	defer t.since("flush", time.Now())
	return t.RawFileSystem.Flush(c, in)
}

func (t *timedFS) Fsync(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	defer t.since("fsync", time.Now())
	return t.RawFileSystem.Fsync(c, in)
}

func (t *timedFS) Release(c <-chan struct{}, in *fuse.ReleaseIn) {
	defer t.since("release", time.Now())
	t.RawFileSystem.Release(c, in)
}

func (t *timedFS) ReadDirPlus(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	defer t.since("readdirplus", time.Now())
	return t.RawFileSystem.ReadDirPlus(c, in, out)
}

func (t *timedFS) ReadDir(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	defer t.since("readdir", time.Now())
	return t.RawFileSystem.ReadDir(c, in, out)
}

func (t *timedFS) Unlink(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	defer t.since("unlink", time.Now())
	return t.RawFileSystem.Unlink(c, h, name)
}

func (t *timedFS) Rename(c <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	defer t.since("rename", time.Now())
	return t.RawFileSystem.Rename(c, in, oldName, newName)
}

func (t *timedFS) Mkdir(c <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	defer t.since("mkdir", time.Now())
	return t.RawFileSystem.Mkdir(c, in, name, out)
}

func (t *timedFS) GetXAttr(c <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	defer t.since("getxattr", time.Now())
	return t.RawFileSystem.GetXAttr(c, h, attr, dest)
}

func (t *timedFS) StatFs(c <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	defer t.since("statfs", time.Now())
	return t.RawFileSystem.StatFs(c, h, out)
}
