/* Start and stop kiln-dut-sim processes. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kiln/error.h"
#include "kiln/simfix.h"
#include "kiln/util.h"

#define SIM_ARGS_MAX 64

int simfix_find_sim(char *out, size_t cap)
{
        char self[KILN_PATH_MAX];
        const char *env = getenv("KILN_DUT_SIM");
        ssize_t n;
        char *slash;

        if (env != NULL && env[0] != '\0') {
                if (access(env, X_OK) != 0)
                        return kiln_fail(KILN_E_NOT_FOUND, "KILN_DUT_SIM='%s' is not executable",
                                         env);
                return kiln_strlcpy(out, env, cap);
        }
        n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n < 0)
                return kiln_fail(KILN_E_IO, "cannot find the kiln binary: %s", strerror(errno));
        self[n] = '\0';
        slash = strrchr(self, '/');
        if (slash != NULL)
                *slash = '\0';
        if (kiln_snprintf(out, cap, "%s/kiln-dut-sim", self) < 0)
                return kiln_fail(KILN_E_RANGE, "path too long");
        if (access(out, X_OK) != 0)
                return kiln_fail(KILN_E_NOT_FOUND,
                                 "kiln-dut-sim not found next to kiln ('%s'); build it or set "
                                 "KILN_DUT_SIM",
                                 out);
        return KILN_OK;
}

/* Read the first line of the child's stdout within the deadline. */
static int read_line(int fd, char *line, size_t cap, uint64_t deadline)
{
        size_t len = 0;

        for (;;) {
                struct pollfd p = {.fd = fd, .events = POLLIN};
                uint64_t now = kiln_now_ms();
                ssize_t n;
                int rc;

                if (now >= deadline)
                        return KILN_E_TIMEOUT;
                rc = poll(&p, 1, (int)(deadline - now));
                if (rc < 0 && errno == EINTR)
                        continue;
                if (rc <= 0)
                        return rc == 0 ? KILN_E_TIMEOUT : KILN_E_IO;
                n = read(fd, line + len, 1);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return KILN_E_TRUNCATED; /* the simulator exited */
                if (line[len] == '\n') {
                        line[len] = '\0';
                        return KILN_OK;
                }
                if (++len == cap - 1)
                        return KILN_E_LIMIT;
        }
}

int simfix_start(const char *sim_path, const char *const *args, const char *log_path,
                 unsigned timeout_ms, struct simfix_dev *ret)
{
        char *argv[SIM_ARGS_MAX + 3];
        char line[KILN_PORT_SPEC_MAX + 16];
        int pipefd[2] = {-1, -1};
        unsigned n = 0;
        pid_t pid;
        int r;

        /* execv takes char *const[]: give it copies rather than cast const away */
        memset(argv, 0, sizeof(argv));
        argv[n++] = kiln_strdup(sim_path);
        for (unsigned i = 0; args != NULL && args[i] != NULL; i++) {
                if (n == SIM_ARGS_MAX) {
                        r = kiln_fail(KILN_E_LIMIT, "too many simulator arguments");
                        goto out;
                }
                argv[n++] = kiln_strdup(args[i]);
        }
        {
                int socket_mode = 0;

                for (unsigned i = 1; i < n; i++)
                        socket_mode |= argv[i] != NULL && strcmp(argv[i], "--socket") == 0;
                if (!socket_mode)
                        argv[n++] = kiln_strdup("--pty");
        }
        for (unsigned i = 0; i < n; i++) {
                if (argv[i] == NULL) {
                        r = KILN_E_NOMEM;
                        goto out;
                }
        }
        if (pipe(pipefd) < 0 || fcntl(pipefd[0], F_SETFD, FD_CLOEXEC) < 0 ||
            fcntl(pipefd[1], F_SETFD, FD_CLOEXEC) < 0) {
                r = kiln_fail(KILN_E_IO, "pipe: %s", strerror(errno));
                goto out;
        }
        pid = fork();
        if (pid < 0) {
                r = kiln_fail(KILN_E_IO, "fork: %s", strerror(errno));
                goto out;
        }
        if (pid == 0) {
                int log = open(log_path ? log_path : "/dev/null",
                               O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

                /* die with the station, even after kill -9 */
                prctl(PR_SET_PDEATHSIG, SIGTERM);
                dup2(pipefd[1], STDOUT_FILENO);
                if (log >= 0)
                        dup2(log, STDERR_FILENO);
                setpgid(0, 0); /* a terminal's ^C reaches the station, which stops its devices */
                execv(sim_path, argv);
                _exit(127);
        }
        close(pipefd[1]);
        pipefd[1] = -1;
        r = read_line(pipefd[0], line, sizeof(line), kiln_now_ms() + timeout_ms);
        if (r == KILN_OK && strncmp(line, "PTY ", 4) == 0)
                r = kiln_strlcpy(ret->port, line + 4, sizeof(ret->port));
        else if (r == KILN_OK && strncmp(line, "SOCKET ", 7) == 0)
                r = kiln_snprintf(ret->port, sizeof(ret->port), "unix:%s", line + 7);
        else if (r == KILN_OK)
                r = KILN_E_PROTO_MALFORMED;
        if (r < 0) {
                struct simfix_dev d = {.pid = pid};
                int status = 0;

                simfix_stop(&d, 1000, &status);
                r = kiln_fail(r, "kiln-dut-sim did not start (%s)%s%s", kiln_strerror(r),
                              WIFEXITED(status) ? "; exit status " : "",
                              WIFEXITED(status) ? (WEXITSTATUS(status) == 127 ? "127 (cannot run)"
                                                                              : "non-zero")
                                                : "");
                goto out;
        }
        ret->pid = pid;
out:
        if (pipefd[0] >= 0)
                close(pipefd[0]);
        if (pipefd[1] >= 0)
                close(pipefd[1]);
        for (unsigned i = 0; i < SIM_ARGS_MAX + 3; i++)
                kiln_free(argv[i]);
        return r;
}

int simfix_stop(struct simfix_dev *d, unsigned timeout_ms, int *ret_status)
{
        uint64_t deadline;
        int status = 0;

        if (d->pid <= 0)
                return KILN_OK;
        kill(d->pid, SIGTERM);
        deadline = kiln_now_ms() + timeout_ms;
        for (;;) {
                pid_t w = waitpid(d->pid, &status, WNOHANG);

                if (w == d->pid)
                        break;
                if (w < 0 && errno != EINTR) {
                        d->pid = 0;
                        return kiln_fail(KILN_E_IO, "waitpid: %s", strerror(errno));
                }
                if (kiln_now_ms() >= deadline) {
                        kill(d->pid, SIGKILL);
                        waitpid(d->pid, &status, 0);
                        break;
                }
                kiln_sleep_ms(10);
        }
        d->pid = 0;
        if (ret_status != NULL)
                *ret_status = status;
        return KILN_OK;
}
