package fs

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Who closes a file decides what its FLUSH means, so the write path looks
// at the process behind a request in /proc. Two kernel facts shape how:
//
//   - FLUSH comes for every close of every duplicate, including the
//     close-on-exec of a child that a writer forked (os/exec does this for
//     each command it runs while the file is open). Such a FLUSH must not
//     commit: the writer still has the file. So a handle remembers the
//     process (thread group) that opened it, and only that process's
//     FLUSH commits; a last close elsewhere commits at RELEASE.
//   - Reading /proc/<pid>/stat takes the target's exec_update_lock
//     (do_task_stat). A process in execve holds it while it closes its
//     close-on-exec files, and so while it waits for our FLUSH answer:
//     reading its stat from the FLUSH handler would never return. Every
//     /proc read here is therefore bounded by a timeout, and a read that
//     times out means "in exec", which is a normal close.

// procTimeout bounds a /proc read; a normal one takes microseconds.
const procTimeout = 250 * time.Millisecond

// readProc reads a /proc file, giving up after procTimeout. A read that
// gives up finishes in the background once the lock it waits for is free
// (when the exec it waits for completes, right after our answer).
func readProc(path string) (string, bool) {
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		b, err := os.ReadFile(path)
		ch <- result{b, err}
	}()
	t := time.NewTimer(procTimeout)
	defer t.Stop()
	select {
	case r := <-ch:
		return string(r.b), r.err == nil
	case <-t.C:
		return "", false
	}
}

// callerPid is the thread id behind a FUSE request, 0 if unknown.
func callerPid(ctx context.Context) uint32 {
	if c, ok := fuse.FromContext(ctx); ok {
		return c.Pid
	}
	return 0
}

// processOf returns the thread group (process id) of thread pid, 0 if
// unknown. /proc/<pid>/status does not take exec_update_lock.
func processOf(pid uint32) int {
	if pid == 0 {
		return 0
	}
	s, ok := readProc(fmt.Sprintf("/proc/%d/status", pid))
	if !ok {
		return 0
	}
	for _, line := range strings.Split(s, "\n") {
		if v, found := strings.CutPrefix(line, "Tgid:"); found {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// processAlive reports whether process pid still exists (a zombie counts
// as gone: its files are closed).
func processAlive(pid int) bool {
	s, ok := readProc(fmt.Sprintf("/proc/%d/stat", pid))
	if !ok {
		// Gone, or in execve (see above): alive then.
		_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
		return err == nil
	}
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// killedBySignal reports whether thread pid is exiting because of a signal
// (kill, Ctrl-C). The kernel closes a dying process's files, so its FLUSH
// looks like a normal close; committing then would publish a half-written
// image. /proc/<pid>/stat field 9 has PF_EXITING (0x4), field 52 the exit
// code (the signal number in the low 7 bits). If the stat cannot be read in
// time the process is in execve (see above): not killed.
func killedBySignal(pid uint32) bool {
	if pid == 0 {
		return false
	}
	s, ok := readProc(fmt.Sprintf("/proc/%d/stat", pid))
	if !ok {
		return false
	}
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return false
	}
	fields := strings.Fields(s[i+1:]) // fields[0] is field 3 (state)
	if len(fields) < 50 {
		return false
	}
	flags, err1 := strconv.ParseUint(fields[6], 10, 64)
	code, err2 := strconv.ParseInt(fields[49], 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	const pfExiting = 0x4
	return flags&pfExiting != 0 && code&0x7f != 0
}
