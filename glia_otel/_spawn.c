/* glia's spawner: `glia run` execs this program, which forks and execs the command, waits for it and reports.
 *
 * Why a separate program: a process's peak RSS (ru_maxrss) covers its whole life, including the moment between
 * fork and exec when it is a copy of its parent, so a command forked from glia's Python process starts with
 * Python's footprint (about 8 MB) as its floor. Forked from this small program instead, it starts where it would
 * under GNU time (itself such a program): the figure is the one `/usr/bin/time -f %M` prints.
 *
 * Usage: _spawn STATUS_FD CGROUP_FILE [--tail TAIL_FD] -- COMMAND [ARGS...]
 *   STATUS_FD    the write end of a pipe to glia; closed in the command at exec
 *   CGROUP_FILE  `tasks` or `cgroup.procs` of the cgroup the command joins between fork and exec, or `-`
 *   TAIL_FD      (`glia run --keep-stderr`) a file glia reads once this program has ended: the command's stderr
 *                becomes a pipe that this program reads, passing every chunk on to its own stderr as it comes, and
 *                when the command has ended the file gets `<bytes written in all>\n<the last 16 KiB>`. The reader
 *                is this program, not glia, so a command whose glia dies still writes to a live pipe; descendants
 *                of the command that still hold the pipe when it ends are passed through by a relay forked here.
 * The environment, the working directory and stdin/stdout (and stderr without --tail) pass to the command
 * untouched.
 *
 * Lines written to STATUS_FD, each in one write (atomic on a pipe):
 *   P <pid>                     the command was forked
 *   C                           the command could not join the cgroup
 *   E <errno>                   the command could not be executed (it then exits 127)
 *   O <read_bytes> <write_bytes>  I/O so far of descendants still running when the command ended
 *   R <status> <maxrss_kb> <utime_us> <stime_us> <children_utime_us> <children_stime_us>
 *       the command's wait status and its own wait4 rusage (the command and the descendants it reaped), then
 *       this program's RUSAGE_CHILDREN (the command and every orphan of its tree that ended while it ran)
 *
 * Signals: SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are forwarded to the command, except those the
 * kernel sent (si_code SI_KERNEL: a terminal signals the whole foreground process group, the command included).
 * This program is a child subreaper: a descendant orphaned while the command runs is reparented here, not to init,
 * and reaped here, so its CPU time and I/O are counted (the kernel adds a reaped child's counters to its reaper's).
 * Never ptrace: that would break commands that trace themselves.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
#define N_FORWARDED (sizeof forwarded / sizeof forwarded[0])

static int status_fd = -1;

static void report(const char *line) {
    size_t len = strlen(line);
    while (len > 0) {
        ssize_t n = write(status_fd, line, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return; /* glia is gone: the command's own status is all that matters now */
        }
        line += n;
        len -= (size_t)n;
    }
}

/* --- the command's stderr, with --tail -------------------------------------------------------------------- */

#define TAIL_BYTES 16384
static char ring[TAIL_BYTES]; /* the last TAIL_BYTES bytes, from ring[total % TAIL_BYTES] on once it wrapped */
static long long total;       /* bytes the command (and its descendants) wrote to its stderr */
static int passing = 1;       /* our stderr still takes them: once it fails they are still read, and kept */

static void take(const char *buf, size_t n) {
    for (size_t done = 0; passing && done < n;) {
        ssize_t w = write(2, buf + done, n - done);
        if (w < 0) {
            if (errno == EINTR) continue;
            passing = 0;
        } else {
            done += (size_t)w;
        }
    }
    for (size_t i = n > TAIL_BYTES ? n - TAIL_BYTES : 0; i < n; i++) ring[(total + (long long)i) % TAIL_BYTES] = buf[i];
    total += (long long)n;
}

/* One read of the pipe: 1 at its end (every writer closed it, or it failed), 0 otherwise (EAGAIN included). */
static int relay_once(int fd) {
    static char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0) {
            take(buf, (size_t)n);
            return 0;
        }
        if (n < 0 && errno == EINTR) continue;
        return n < 0 && errno == EAGAIN ? 0 : 1;
    }
}

static void write_all_at(int fd, const char *buf, size_t n, off_t at) {
    while (n > 0) {
        ssize_t w = pwrite(fd, buf, n, at);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        buf += w;
        n -= (size_t)w;
        at += w;
    }
}

static void write_tail(int fd) {
    char head[32];
    int h = snprintf(head, sizeof head, "%lld\n", total);
    write_all_at(fd, head, (size_t)h, 0);
    size_t start = (size_t)(total % TAIL_BYTES);
    if (total <= TAIL_BYTES) {
        write_all_at(fd, ring, (size_t)total, h);
    } else {
        write_all_at(fd, ring + start, TAIL_BYTES - start, h);
        write_all_at(fd, ring, start, h + (off_t)(TAIL_BYTES - start));
    }
}

static long long usec(struct timeval tv) { return (long long)tv.tv_sec * 1000000LL + tv.tv_usec; }

/* The command, from the child side of the fork. Never returns. */
static void exec_command(char **argv, const char *cgroup_file, int stderr_fd) {
    char line[64];
    if (stderr_fd >= 0) dup2(stderr_fd, 2); /* the pipe (the original closes at exec) */
    if (strcmp(cgroup_file, "-") != 0) {
        /* On cgroup v1 `tasks` moves the calling thread only, which avoids the RCU grace period a move through
         * cgroup.procs waits for: this process has one thread, so it moves whole. */
        int fd = open(cgroup_file, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1) report("C\n");
        if (fd >= 0) close(fd);
    }
    /* glia's Python ignores SIGPIPE and SIGXFSZ and the ignore survives exec: the command gets the defaults (as
     * Python's subprocess does), and nothing blocked. */
    signal(SIGPIPE, SIG_DFL);
    signal(SIGXFSZ, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execvp(argv[0], argv);
    int err = errno;
    if (err == ENOEXEC) {
        /* No #! line: a shell runs such a file as a script, and so does glia (glibc's execvp does this itself;
         * others may not). */
        size_t n = 0;
        while (argv[n]) n++;
        char **sh = calloc(n + 2, sizeof *sh);
        if (sh) {
            sh[0] = "sh";
            for (size_t i = 0; i < n; i++) sh[i + 1] = argv[i];
            execv("/bin/sh", sh);
        }
        err = errno;
    }
    snprintf(line, sizeof line, "E %d\n", err);
    report(line);
    _exit(127);
}

/* Parent pid and I/O counters of /proc/<pid>; 0 on success. */
static int read_proc(long pid, long *ppid, long long *rd, long long *wr) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *end = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (!end || sscanf(end + 1, " %*c %ld", ppid) != 1) return -1;
    *rd = *wr = 0;
    snprintf(path, sizeof path, "/proc/%ld/io", pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = strstr(buf, "\nread_bytes:");
    if (p) *rd = atoll(p + 12);
    p = strstr(buf, "\nwrite_bytes:");
    if (p) *wr = atoll(p + 13);
    return 0;
}

/* I/O so far of this process's live descendants (orphans of the command's tree that outlive it). Their counters
 * include what their own reaped children did; their live children are descendants too and counted on their own. */
static void report_live_descendants(void) {
    enum { MAX = 65536 };
    static long pids[MAX], parents[MAX], tree[MAX];
    static long long reads[MAX], writes[MAX];
    static char in_tree[MAX];
    size_t n = 0, t = 0;
    DIR *dir = opendir("/proc");
    if (!dir) return;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL && n < MAX) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
        long pid = atol(e->d_name);
        if (read_proc(pid, &parents[n], &reads[n], &writes[n]) == 0) pids[n++] = pid;
    }
    closedir(dir);
    tree[t++] = (long)getpid();
    long long rd = 0, wr = 0;
    memset(in_tree, 0, n);
    for (int changed = 1; changed;) { /* one pass per level of the tree: a few */
        changed = 0;
        for (size_t i = 0; i < n; i++) {
            if (in_tree[i]) continue;
            for (size_t j = 0; j < t; j++) {
                if (tree[j] != parents[i]) continue;
                in_tree[i] = 1;
                changed = 1;
                tree[t++] = pids[i];
                rd += reads[i];
                wr += writes[i];
                break;
            }
        }
    }
    if (t > 1) {
        char line[96];
        snprintf(line, sizeof line, "O %lld %lld\n", rd, wr);
        report(line);
    }
}

/* Reap everything that ended: the command, and orphans reparented here. 1 once the command is among them. */
static int reap(pid_t pid, int *status, struct rusage *ru) {
    int st, done = 0;
    struct rusage r;
    pid_t w;
    while ((w = wait4(-1, &st, WNOHANG, &r)) > 0) {
        if (w == pid) {
            *status = st;
            *ru = r;
            done = 1;
        }
    }
    if (w < 0 && errno == ECHILD) done = 1; /* cannot happen: the command is our child */
    return done;
}

/* The wait with --tail: the forwarded signals and SIGCHLD through a signalfd, and the command's stderr, in one
 * poll. Returns at the command's end with `*eof` set when nobody holds the pipe any more. */
static void wait_reading(pid_t pid, int sfd, int err_fd, int *status, struct rusage *ru, int *eof) {
    for (int done = 0; !done;) {
        struct pollfd fds[2] = {{sfd, POLLIN, 0}, {*eof ? -1 : err_fd, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) continue; /* EINTR: a stop and continue */
        if (fds[1].revents && relay_once(err_fd)) *eof = 1;
        if (!(fds[0].revents & POLLIN)) continue;
        struct signalfd_siginfo info;
        while (read(sfd, &info, sizeof info) == (ssize_t)sizeof info) {
            if (info.ssi_signo != SIGCHLD) {
                if (info.ssi_code != SI_KERNEL) kill(pid, (int)info.ssi_signo);
            } else if (reap(pid, status, ru)) {
                done = 1;
            }
        }
    }
    /* The command has ended and closed its end: what it wrote is in the pipe, read to EAGAIN or the end. */
    while (!*eof) {
        long long before = total;
        if (relay_once(err_fd)) *eof = 1;
        else if (total == before) break; /* EAGAIN: a descendant still holds the pipe */
    }
}

int main(int argc, char **argv) {
    int at = 3, tail_fd = -1;
    if (argc > 5 && strcmp(argv[3], "--tail") == 0) {
        tail_fd = atoi(argv[4]);
        at = 5;
    }
    if (argc < at + 2 || strcmp(argv[at], "--") != 0) {
        fputs("usage: _spawn STATUS_FD CGROUP_FILE [--tail TAIL_FD] -- COMMAND [ARGS...] (run by `glia run`)\n",
              stderr);
        return 2;
    }
    status_fd = atoi(argv[1]);
    /* Ours until the command execs, then closed in it: the command must not hold glia's pipe open. */
    if (fcntl(status_fd, F_SETFD, FD_CLOEXEC) < 0) return 2;
    if (tail_fd >= 0 && fcntl(tail_fd, F_SETFD, FD_CLOEXEC) < 0) return 2;
    const char *cgroup_file = argv[2];
    char **command = argv + at + 1;

    /* Blocked before the fork (glia blocked them before exec'ing this program too, so none is lost meanwhile):
     * they are taken with sigwaitinfo, not handlers. */
    sigset_t waited;
    sigemptyset(&waited);
    sigaddset(&waited, SIGCHLD);
    for (size_t i = 0; i < N_FORWARDED; i++) sigaddset(&waited, forwarded[i]);
    sigprocmask(SIG_BLOCK, &waited, NULL);
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); /* best effort: without it orphans go to init, as before */
    signal(SIGPIPE, SIG_IGN); /* a glia that is gone makes a report fail, not this program, which still reaps */

    /* With --tail: the pipe that becomes the command's stderr, and the signals as a descriptor to poll beside it.
     * Either failing leaves stderr untouched (and the tail empty): the command matters more than its output. */
    int err_pipe[2] = {-1, -1}, sfd = -1;
    if (tail_fd >= 0) {
        sfd = signalfd(-1, &waited, SFD_CLOEXEC | SFD_NONBLOCK);
        if (sfd < 0 || pipe2(err_pipe, O_CLOEXEC) < 0) {
            if (sfd >= 0) close(sfd);
            sfd = err_pipe[0] = err_pipe[1] = -1;
        }
    }

    pid_t pid = fork();
    if (pid < 0) {
        char line[64];
        snprintf(line, sizeof line, "E %d\n", errno);
        report(line);
        return 127;
    }
    if (pid == 0) exec_command(command, cgroup_file, err_pipe[1]);
    char line[192];
    snprintf(line, sizeof line, "P %ld\n", (long)pid);
    report(line);

    int status = 0, eof = 1;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    if (err_pipe[0] >= 0) {
        close(err_pipe[1]); /* the command's now: its end, when all its holders close it, is ours to see */
        fcntl(err_pipe[0], F_SETFL, fcntl(err_pipe[0], F_GETFL) | O_NONBLOCK);
        eof = 0;
        wait_reading(pid, sfd, err_pipe[0], &status, &ru, &eof);
        close(sfd);
        write_tail(tail_fd);
    } else {
        for (int done = 0; !done;) {
            siginfo_t info;
            if (sigwaitinfo(&waited, &info) < 0) continue; /* EINTR: a stop and continue */
            if (info.si_signo != SIGCHLD) {
                if (info.si_code != SI_KERNEL) kill(pid, info.si_signo);
                continue;
            }
            done = reap(pid, &status, &ru);
        }
    }
    /* Orphans that ended meanwhile are reaped (their counters become ours); those still running are read. */
    int st;
    while (wait4(-1, &st, WNOHANG, NULL) > 0) {
    }
    siginfo_t left;
    memset(&left, 0, sizeof left);
    if (waitid(P_ALL, 0, &left, WEXITED | WNOHANG | WNOWAIT) == 0) report_live_descendants();

    struct rusage children;
    getrusage(RUSAGE_CHILDREN, &children);
    snprintf(line, sizeof line, "R %d %ld %lld %lld %lld %lld\n", status, ru.ru_maxrss, usec(ru.ru_utime),
             usec(ru.ru_stime), usec(children.ru_utime), usec(children.ru_stime));
    report(line);
    if (!eof) {
        /* Descendants still write there: a relay passes the rest through until they close it, so none of them is
         * cut off, while this program ends and glia records the run. It holds nothing of glia's. */
        pid_t relay = fork();
        if (relay == 0) {
            close(status_fd);
            close(tail_fd);
            close(0); /* glia's stdin and stdout are not held open on its behalf */
            close(1);
            fcntl(err_pipe[0], F_SETFL, fcntl(err_pipe[0], F_GETFL) & ~O_NONBLOCK);
            while (!relay_once(err_pipe[0])) {
            }
            _exit(0);
        }
    }
    return 0;
}
