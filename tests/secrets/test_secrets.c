/*
 * Secret hygiene (DESIGN.md §11: no secret appears in the database, logs, exports or core files).
 *
 * A development token whose user PIN we choose (kiln hsm init-dev, then C_SetPIN) is given to the
 * real kiln through pin_file or pin_env. Provisioning runs with both example recipes, clean and
 * under faults (a disconnect after the credential was written, a bad proof of possession, a stuck
 * fuse, a power cut, corrupted and dropped bytes with noise, kill -9 and restart), with --json, as
 * lines on a pipe, and on a pseudo-terminal (the operator's status screen). Then every file the run
 * and the quality commands leave behind is searched: the database and its -wal and -shm, the export
 * (JSON Lines, CSV, signed manifest), trace, evidence, audit and label outputs, kiln's captured
 * stdout and stderr, the simulators' logs. The search covers every secret, in raw bytes, lower and
 * upper case hex, base64 and base64url at each of the three byte alignments, and as an unsalted
 * SHA-256 in hex:
 *   - the user PIN (and the token's SO PIN),
 *   - every device credential the station generated (the SECRET objects of each simulated chip,
 *     read back from its state file with the kiln_sim library, also from copies taken before a
 *     retry replaced them),
 *   - every device private key (the key slots of the chip state).
 * The simulators' state files are the devices' own flash and are the only files skipped.
 * The HSM's private and secret keys are checked through PKCS#11: sensitive, not extractable, and
 * CKA_VALUE refused. kiln killed by SIGABRT while it holds a device password must leave no core
 * file with it (a core file, if the system writes one, is searched too).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <p11-kit/pkcs11.h>

#include "e2e.h"
#include "kiln/sim.h"

#define SOFTHSM "/usr/lib/softhsm/libsofthsm2.so"
/* The PIN we give the token: recognisable, and nothing else in a run looks like it. */
#define KNOWN_PIN "Kiln-Known-PIN-3f9c1e77a2b84d05"
#define PIN_ENV "KILN_SECRETS_TEST_PIN"
#define SECRETS_MAX 128
#define SECRET_LEN_MAX 128
#define FILE_MAX (256u << 20)

struct secret {
        char what[96];
        uint8_t v[SECRET_LEN_MAX];
        size_t len;
};

struct secrets {
        struct secret s[SECRETS_MAX];
        unsigned n;
};

static char pki[1024]; /* the development PKI with the known PIN (shared by the tests) */
static char so_pin[256];
static char orig_pin[256];

/* ------------------------------------------------------------------------------ PKCS#11 */

struct p11 {
        void *dl;
        CK_FUNCTION_LIST_PTR f;
        CK_SLOT_ID slot;
};

static void p11_open(struct p11 *p)
{
        CK_RV (*get)(CK_FUNCTION_LIST_PTR_PTR) = NULL;
        CK_SLOT_ID slots[16];
        CK_ULONG n = 16;
        void *sym;
        int found = 0;

        memset(p, 0, sizeof(*p));
        p->dl = dlopen(SOFTHSM, RTLD_NOW | RTLD_LOCAL);
        assert_non_null(p->dl);
        sym = dlsym(p->dl, "C_GetFunctionList");
        assert_non_null(sym);
        memcpy(&get, &sym, sizeof(get));
        assert_int_equal(get(&p->f), CKR_OK);
        assert_int_equal(p->f->C_Initialize(NULL), CKR_OK);
        assert_int_equal(p->f->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
        for (CK_ULONG i = 0; i < n && !found; i++) {
                CK_TOKEN_INFO ti;

                if (p->f->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
                    memcmp(ti.label, "kiln-dev ", 9) == 0) {
                        p->slot = slots[i];
                        found = 1;
                }
        }
        assert_true(found);
}

static void p11_close(struct p11 *p)
{
        p->f->C_Finalize(NULL);
        dlclose(p->dl);
}

static void read_small(const char *path, char *out, size_t cap)
{
        FILE *f = fopen(path, "r");
        size_t n;

        assert_non_null(f);
        n = fread(out, 1, cap - 1, f);
        fclose(f);
        while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
                n--;
        out[n] = '\0';
}

static void write_pin_file(const char *path, const char *pin)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

        assert_true(fd >= 0);
        assert_int_equal(write(fd, pin, strlen(pin)), (ssize_t)strlen(pin));
        assert_int_equal(write(fd, "\n", 1), 1);
        close(fd);
}

/* One shared development PKI whose user PIN is KNOWN_PIN. */
static void make_pki(const char *kiln)
{
        char build[512], cmd[2048], path[1100];
        struct p11 p;
        CK_SESSION_HANDLE s;

        if (pki[0] != '\0')
                return;
        assert_non_null(realpath(getenv("KILN_BUILD_DIR") ? getenv("KILN_BUILD_DIR") : ".", build));
        snprintf(pki, sizeof(pki), "%s/secrets-tmp", build);
        mkdir(pki, 0700);
        snprintf(pki, sizeof(pki), "%s/secrets-tmp/pki-XXXXXX", build);
        assert_non_null(mkdtemp(pki));
        snprintf(pki + strlen(pki), sizeof(pki) - strlen(pki), "/hsm");
        snprintf(cmd, sizeof(cmd), "'%s' hsm init-dev --dir '%s' >/dev/null", kiln, pki);
        assert_int_equal(system(cmd), 0);
        snprintf(path, sizeof(path), "%s/pin", pki);
        read_small(path, orig_pin, sizeof(orig_pin));
        snprintf(path, sizeof(path), "%s/so-pin", pki);
        read_small(path, so_pin, sizeof(so_pin));
        snprintf(path, sizeof(path), "%s/softhsm2.conf", pki);
        setenv("SOFTHSM2_CONF", path, 1);
        p11_open(&p);
        assert_int_equal(
            p.f->C_OpenSession(p.slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s),
            CKR_OK);
        assert_int_equal(p.f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)orig_pin, strlen(orig_pin)),
                         CKR_OK);
        assert_int_equal(p.f->C_SetPIN(s, (CK_UTF8CHAR_PTR)orig_pin, strlen(orig_pin),
                                       (CK_UTF8CHAR_PTR)KNOWN_PIN, strlen(KNOWN_PIN)),
                         CKR_OK);
        p.f->C_Logout(s);
        p.f->C_CloseSession(s);
        p11_close(&p);
        snprintf(path, sizeof(path), "%s/known-pin", pki);
        write_pin_file(path, KNOWN_PIN);
        setenv(PIN_ENV, KNOWN_PIN, 1);
}

/* --------------------------------------------------------------------------- secrets */

static void secret_add(struct secrets *ss, const char *what, const void *v, size_t len)
{
        struct secret *s;

        assert_true(len > 0 && len <= SECRET_LEN_MAX);
        for (unsigned i = 0; i < ss->n; i++)
                if (ss->s[i].len == len && memcmp(ss->s[i].v, v, len) == 0)
                        return;
        assert_true(ss->n < SECRETS_MAX);
        s = &ss->s[ss->n++];
        snprintf(s->what, sizeof(s->what), "%s", what);
        memcpy(s->v, v, len);
        s->len = len;
}

/* The credentials (SECRET objects) and private keys held by one simulated chip. */
static unsigned secrets_from_state(struct secrets *ss, const char *path, const char *tag)
{
        struct sim_state *st = NULL;
        unsigned n = 0;
        char what[96];

        assert_int_equal(sim_state_load(path, &st), 0);
        for (unsigned i = 0; i < st->n_objects; i++) {
                const struct sim_object *o = &st->objects[i];

                if (o->has_complete && (o->flags & KILN_OBJ_SECRET) && o->len > 0) {
                        snprintf(what, sizeof(what), "device credential '%s' of %s", o->name, tag);
                        secret_add(ss, what, o->data, o->len);
                        n++;
                }
        }
        for (unsigned k = 0; k < SIM_KEY_SLOTS; k++) {
                if (!st->keys[k].present)
                        continue;
                snprintf(what, sizeof(what), "device private key slot %u of %s", k, tag);
                secret_add(ss, what, st->keys[k].priv, SIM_PRIV_LEN);
                n++;
        }
        sim_state_free(st);
        return n;
}

static void secrets_base(struct secrets *ss)
{
        memset(ss, 0, sizeof(*ss));
        secret_add(ss, "the HSM user PIN", KNOWN_PIN, strlen(KNOWN_PIN));
        secret_add(ss, "the HSM SO PIN", so_pin, strlen(so_pin));
        secret_add(ss, "the token's first user PIN", orig_pin, strlen(orig_pin));
}

/* Every secret of every chip of the test so far. */
static void secrets_devices(struct secrets *ss, struct e2e *x)
{
        DIR *d = opendir(x->dir);
        struct dirent *e;
        unsigned creds = 0;

        assert_non_null(d);
        while ((e = readdir(d)) != NULL) {
                char path[1400];
                size_t n = strlen(e->d_name);

                if (n < 7 || strcmp(e->d_name + n - 6, ".state") != 0 ||
                    strncmp(e->d_name, "dev-", 4) != 0)
                        continue;
                snprintf(path, sizeof(path), "%s/%s", x->dir, e->d_name);
                creds += secrets_from_state(ss, path, e->d_name);
        }
        closedir(d);
        /* a search for nothing finds nothing: the chips must have been provisioned */
        assert_true(creds >= 2);
}

/* Keep a copy of a chip's state: a retry replaces its credential and keys. */
static void state_snapshot(struct e2e *x, unsigned i, const char *tag)
{
        char from[1400], to[1400], cmd[3000];

        snprintf(from, sizeof(from), "%s/dev-%s.state", x->dir, x->uid[i]);
        snprintf(to, sizeof(to), "%s/dev-%s-%s.state", x->dir, x->uid[i], tag);
        snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", from, to);
        assert_int_equal(system(cmd), 0);
}

/* ------------------------------------------------------------------------- encodings */

static void hex_of(const uint8_t *v, size_t n, int upper, char *out)
{
        static const char lo[] = "0123456789abcdef", up[] = "0123456789ABCDEF";
        const char *h = upper ? up : lo;

        for (size_t i = 0; i < n; i++) {
                out[2 * i] = h[v[i] >> 4];
                out[2 * i + 1] = h[v[i] & 15];
        }
        out[2 * n] = '\0';
}

/*
 * The base64 characters that encode v wherever it starts in a larger stream: encode it after
 * `align` filler bytes and keep the characters that depend on v's bytes only.
 */
static size_t b64_core(const uint8_t *v, size_t n, unsigned align, int url, char *out)
{
        uint8_t buf[SECRET_LEN_MAX + 3];
        char enc[4 * (SECRET_LEN_MAX + 3) / 3 + 8];
        size_t first, last, len;

        memset(buf, 0, align);
        memcpy(buf + align, v, n);
        len = (size_t)EVP_EncodeBlock((unsigned char *)enc, buf, (int)(n + align));
        /* characters fully inside the secret: from the group after the filler, to the last
         * complete group of secret bytes */
        first = align == 0 ? 0 : 4;
        last = ((align + n) / 3) * 4;
        if (align == 0)
                last = (n / 3) * 4;
        if (last <= first || last > len)
                return 0;
        memcpy(out, enc + first, last - first);
        out[last - first] = '\0';
        if (url) {
                for (char *p = out; *p; p++)
                        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
        }
        return last - first;
}

struct needle {
        char form[48];
        uint8_t b[4 * SECRET_LEN_MAX];
        size_t len;
        const struct secret *s;
};

static unsigned needles_of(const struct secret *s, struct needle *nd)
{
        unsigned n = 0;
        uint8_t md[32];

        nd[n] = (struct needle){.s = s, .len = s->len};
        snprintf(nd[n].form, sizeof(nd[n].form), "raw");
        memcpy(nd[n++].b, s->v, s->len);
        for (int up = 0; up < 2; up++) {
                nd[n] = (struct needle){.s = s, .len = 2 * s->len};
                snprintf(nd[n].form, sizeof(nd[n].form), up ? "HEX" : "hex");
                hex_of(s->v, s->len, up, (char *)nd[n++].b);
        }
        for (int url = 0; url < 2; url++) {
                for (unsigned a = 0; a < 3; a++) {
                        nd[n] = (struct needle){.s = s};
                        nd[n].len = b64_core(s->v, s->len, a, url, (char *)nd[n].b);
                        snprintf(nd[n].form, sizeof(nd[n].form), "%s (alignment %u)",
                                 url ? "base64url" : "base64", a);
                        if (nd[n].len >= 12)
                                n++;
                }
        }
        SHA256(s->v, s->len, md);
        nd[n] = (struct needle){.s = s, .len = 64};
        snprintf(nd[n].form, sizeof(nd[n].form), "unsalted SHA-256 hex");
        hex_of(md, sizeof(md), 0, (char *)nd[n++].b);
        return n;
}

/* ---------------------------------------------------------------------------- search */

static void *read_file(const char *path, size_t *ret_len)
{
        FILE *f = fopen(path, "rb");
        uint8_t *p;
        long n;

        assert_non_null(f);
        assert_int_equal(fseek(f, 0, SEEK_END), 0);
        n = ftell(f);
        assert_true(n >= 0 && (unsigned long)n < FILE_MAX);
        assert_int_equal(fseek(f, 0, SEEK_SET), 0);
        p = malloc((size_t)n + 1);
        assert_non_null(p);
        assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
        fclose(f);
        *ret_len = (size_t)n;
        return p;
}

struct scan {
        const struct secrets *ss;
        unsigned files;
        size_t bytes;
        int saw_db, saw_export, saw_log;
};

static void scan_file(struct scan *sc, const char *path)
{
        static struct needle nd[16];
        size_t len = 0;
        uint8_t *p = read_file(path, &len);

        sc->files++;
        sc->bytes += len;
        for (unsigned i = 0; i < sc->ss->n; i++) {
                unsigned n = needles_of(&sc->ss->s[i], nd);

                for (unsigned k = 0; k < n; k++)
                        if (nd[k].len > 0 && memmem(p, len, nd[k].b, nd[k].len) != NULL)
                                fail_msg("%s found in %s form in %s", sc->ss->s[i].what, nd[k].form,
                                         path);
        }
        free(p);
}

static void scan_dir(struct scan *sc, const char *dir)
{
        DIR *d = opendir(dir);
        struct dirent *e;

        assert_non_null(d);
        while ((e = readdir(d)) != NULL) {
                char path[2048];
                struct stat st;
                size_t n = strlen(e->d_name);

                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                        continue;
                snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
                if (lstat(path, &st) < 0)
                        continue;
                if (S_ISDIR(st.st_mode)) {
                        scan_dir(sc, path);
                        continue;
                }
                if (!S_ISREG(st.st_mode))
                        continue;
                /* the devices' own flash holds their secrets by design */
                if (n > 6 && strcmp(e->d_name + n - 6, ".state") == 0)
                        continue;
                sc->saw_db |= strstr(e->d_name, "kiln.db") != NULL;
                sc->saw_export |= strstr(e->d_name, "export") != NULL;
                sc->saw_log |= strstr(e->d_name, ".log") != NULL;
                scan_file(sc, path);
        }
        closedir(d);
}

/* ---------------------------------------------------------------------- the station */

enum pin_via { PIN_FILE, PIN_ENV_VAR };

static void config(struct e2e *x, enum pin_via via)
{
        FILE *f = fopen(x->config, "w");

        assert_non_null(f);
        fprintf(f,
                "schema: 1\n"
                "station_id: secrets-station\n"
                "mode: development\n"
                "database: %s\n"
                "hsm:\n"
                "  module: " SOFTHSM "\n"
                "  token: \"pkcs11:token=kiln-dev\"\n",
                x->db);
        if (via == PIN_FILE)
                fprintf(f, "  pin_file: %s/known-pin\n", pki);
        else
                fprintf(f, "  pin_env: " PIN_ENV "\n");
        fprintf(f,
                "  softhsm_conf: %s/softhsm2.conf\n"
                "  audit_key: \"pkcs11:token=kiln-dev;object=kiln-dev-audit;type=private\"\n"
                "  commitment_key: \"pkcs11:token=kiln-dev;object=kiln-dev-commit;"
                "type=secret-key\"\n"
                "slots:\n",
                pki);
        for (unsigned i = 0; i < x->n_dev; i++)
                if (x->dev[i].pid > 0)
                        fprintf(f, "  - id: S%u\n    port: %s\n", i + 1, x->dev[i].port);
        fprintf(f, "labels:\n  printer: file:%s/labels\n  format: zpl\n", x->dir);
        fclose(f);
}

static void setup(struct e2e *x, const char *name)
{
        char path[1200];

        e2e_setup(x, name);
        make_pki(x->kiln);
        snprintf(path, sizeof(path), "%s/labels", x->dir);
        mkdir(path, 0700);
}

/* Keep kiln's terminal output (stdout and stderr) as files in the test directory. */
static void keep_output(struct e2e *x, const char *tag, const char *out, const char *err)
{
        char path[1200];
        FILE *f;

        snprintf(path, sizeof(path), "%s/terminal-%s.log", x->dir, tag);
        f = fopen(path, "w");
        assert_non_null(f);
        fputs(out, f);
        fputs(err, f);
        fclose(f);
}

static unsigned run_n;

/* How kiln run reports: JSON events, lines on a pipe, or the status screen on a terminal. */
enum output { OUT_LINES = 0, OUT_JSON = 1, OUT_TTY = 2 };

/*
 * Run argv on a pseudo-terminal (stdout and stderr), as an operator would, and collect what the
 * terminal showed into out. Returns the exit status.
 */
static int on_terminal(const char *const *argv, char *out, size_t cap)
{
        int master = posix_openpt(O_RDWR | O_NOCTTY), status = 0;
        size_t len = 0;
        time_t deadline = time(NULL) + 180;
        pid_t pid;

        assert_true(master >= 0);
        assert_int_equal(grantpt(master), 0);
        assert_int_equal(unlockpt(master), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                int slave, devnull = open("/dev/null", O_RDONLY);

                setsid();
                slave = open(ptsname(master), O_RDWR);
                if (slave < 0)
                        _exit(126);
                if (devnull >= 0)
                        dup2(devnull, 0);
                dup2(slave, 1);
                dup2(slave, 2);
                close(master);
                execv(argv[0], (char *const *)(uintptr_t)argv);
                _exit(127);
        }
        /* until the terminal hangs up: every process holding it has exited */
        while (time(NULL) < deadline) {
                struct pollfd p = {.fd = master, .events = POLLIN};
                ssize_t k;

                if (poll(&p, 1, 200) <= 0)
                        continue;
                k = read(master, out + len, cap - 1 - len);
                if (k <= 0)
                        break;
                len += (size_t)k;
                if (len == cap - 1)
                        break;
        }
        out[len] = '\0';
        close(master);
        /* the terminal hangs up as kiln closes its files, a moment before it can be reaped */
        for (;;) {
                struct timespec ts = {0, 10000000};

                if (waitpid(pid, &status, WNOHANG) == pid)
                        break;
                if (time(NULL) > deadline) {
                        kill(pid, SIGKILL);
                        waitpid(pid, &status, 0);
                        fail_msg("kiln run on a terminal did not end:\n%s", out);
                }
                nanosleep(&ts, NULL);
        }
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* kiln run with one of the outputs above, output kept. Returns the exit status. */
static int station(struct e2e *x, const char *recipe, enum output how, char *out, size_t cap)
{
        char recipe_path[1200], tag[32], *err = malloc(65536);
        const char *args[16];
        unsigned n = 0;
        int st;

        assert_non_null(err);
        e2e_recipe_path(x, recipe, recipe_path, sizeof(recipe_path));
        args[n++] = "run";
        args[n++] = "--config";
        args[n++] = x->config;
        args[n++] = "--recipe";
        args[n++] = recipe_path;
        args[n++] = "--work-order";
        args[n++] = "WO-SECRETS";
        args[n++] = "--operator";
        args[n++] = "secrets-operator";
        args[n++] = "--once";
        if (how == OUT_JSON)
                args[n++] = "--json";
        args[n] = NULL;
        if (how == OUT_TTY) {
                const char *argv[18];

                argv[0] = x->kiln;
                memcpy(argv + 1, args, (n + 1) * sizeof(args[0]));
                err[0] = '\0';
                st = on_terminal(argv, out, cap);
        } else {
                st = e2e_kiln(x, args, out, cap, err, 65536);
        }
        snprintf(tag, sizeof(tag), "run-%u-%s", ++run_n,
                 how == OUT_JSON  ? "json"
                 : how == OUT_TTY ? "terminal"
                                  : "lines");
        keep_output(x, tag, out, err);
        free(err);
        return st;
}

/* Everything a quality engineer can get out of the database, kept as files. */
static void quality_outputs(struct e2e *x)
{
        static const char *const verdicts[] = {"PASS", "FAIL", "LOCK_FAILED", "SCRAP",
                                               "IN_PROGRESS"};
        char *out = malloc(1u << 20), *err = malloc(65536), path[1200], man[1200], tag[96];
        char serials[4096];
        int st;

        assert_non_null(out);
        assert_non_null(err);
        for (int fmt = 0; fmt < 2; fmt++) {
                const char *format = fmt ? "csv" : "jsonl";

                snprintf(path, sizeof(path), "%s/export.%s", x->dir, format);
                snprintf(man, sizeof(man), "%s/export-%s.manifest.json", x->dir, format);
                {
                        const char *args[] = {"export", "--db",     x->db,     "--format",
                                              format,   "-o",       path,      "--manifest",
                                              man,      "--config", x->config, NULL};

                        st = e2e_kiln(x, args, out, 1u << 20, err, 65536);
                        snprintf(tag, sizeof(tag), "export-%s", format);
                        keep_output(x, tag, out, err);
                        assert_int_equal(st, 0);
                }
        }
        for (unsigned v = 0; v < sizeof(verdicts) / sizeof(verdicts[0]); v++) {
                const char *args[] = {"export", "--db", x->db, "--verdict", verdicts[v], NULL};

                e2e_kiln(x, args, out, 1u << 20, err, 65536);
                snprintf(tag, sizeof(tag), "export-stdout-%s", verdicts[v]);
                keep_output(x, tag, out, err);
        }
        {
                const char *args[] = {"audit", "verify", "--db", x->db, NULL};

                st = e2e_kiln(x, args, out, 1u << 20, err, 65536);
                keep_output(x, "audit-verify", out, err);
                assert_int_equal(st, 0);
        }
        for (int md = 0; md < 2; md++) {
                const char *args[] = {"evidence",         "--db",       x->db,
                                      "--work-order",     "WO-SECRETS", "--format",
                                      md ? "md" : "json", NULL};

                e2e_kiln(x, args, out, 1u << 20, err, 65536);
                snprintf(tag, sizeof(tag), "evidence-%s", md ? "md" : "json");
                keep_output(x, tag, out, err);
        }
        e2e_sql(x, "SELECT group_concat(serial, ' ') FROM units", serials, sizeof(serials));
        for (char *s = serials, *sp; s != NULL && *s != '\0'; s = sp ? sp + 1 : NULL) {
                sp = strchr(s, ' ');
                if (sp != NULL)
                        *sp = '\0';
                for (int json = 0; json < 2; json++) {
                        const char *args[] = {"trace", s, "--db", x->db, json ? "--json" : NULL,
                                              NULL};

                        e2e_kiln(x, args, out, 1u << 20, err, 65536);
                        snprintf(tag, sizeof(tag), "trace-%.40s%s", s, json ? "-json" : "");
                        keep_output(x, tag, out, err);
                }
        }
        free(out);
        free(err);
}

/* The search, after the runs and the quality outputs of a test. */
static void check_no_secret(struct e2e *x, struct secrets *ss)
{
        struct scan sc = {.ss = ss};

        quality_outputs(x);
        secrets_devices(ss, x);
        scan_dir(&sc, x->dir);
        /* what must have been searched */
        assert_true(sc.saw_db && sc.saw_export && sc.saw_log);
        assert_true(sc.files >= 10);
        print_message("searched %u files (%zu bytes) for %u secrets\n", sc.files, sc.bytes, ss->n);
}

static void expect_pass(const char *out)
{
        if (strstr(out, "PASS") == NULL)
                fail_msg("expected a PASS unit:\n%s", out);
}

/* ------------------------------------------------------------------------------- tests */

static void clean_run(const char *name, const char *recipe, const char *product, enum output how,
                      enum pin_via via)
{
        const char *sim[] = {"--product", product, NULL};
        struct secrets *ss = calloc(1, sizeof(*ss));
        char *out = malloc(1u << 16);
        struct e2e x;

        assert_non_null(ss);
        assert_non_null(out);
        setup(&x, name);
        e2e_sim(&x, NULL, sim);
        config(&x, via);
        assert_int_equal(station(&x, recipe, how, out, 1u << 16), 0);
        expect_pass(out);
        secrets_base(ss);
        check_no_secret(&x, ss);
        e2e_teardown(&x);
        free(ss);
        free(out);
}

static void test_plug_json_pin_file(void **state)
{
        (void)state;
        clean_run("plug-json", "smartplug-ctm.yaml", "smartplug-a1", OUT_JSON, PIN_FILE);
}

static void test_plug_terminal_pin_env(void **state)
{
        (void)state;
        clean_run("plug-text", "smartplug-ctm.yaml", "smartplug-a1", OUT_TTY, PIN_ENV_VAR);
}

static void test_gateway_json_pin_env(void **state)
{
        (void)state;
        clean_run("gw-json", "gateway-industrial.yaml", "gateway-g2", OUT_JSON, PIN_ENV_VAR);
}

static void test_gateway_terminal_pin_file(void **state)
{
        (void)state;
        clean_run("gw-text", "gateway-industrial.yaml", "gateway-g2", OUT_LINES, PIN_FILE);
}

/* One unit through a fault, then the unit again without it (retry, resume or refusal). */
static void fault_then_again(struct e2e *x, const char *recipe, const char *product,
                             const char *const *fault, enum output how, enum pin_via via)
{
        const char *sim[16] = {"--product", product};
        const char *again[] = {"--product", product, NULL};
        char *out = malloc(1u << 16);
        unsigned n = 2;

        assert_non_null(out);
        for (unsigned i = 0; fault[i] != NULL && n < 15; i++)
                sim[n++] = fault[i];
        sim[n] = NULL;
        e2e_sim(x, NULL, sim);
        config(x, via);
        station(x, recipe, how, out, 1u << 16);
        /* whatever the device was given before the retry replaces it */
        e2e_sim_stop(x, x->n_dev - 1);
        state_snapshot(x, x->n_dev - 1, "first");
        e2e_sim_restart(x, x->n_dev - 1, again);
        config(x, via);
        station(x, recipe, how == OUT_JSON ? OUT_TTY : OUT_JSON, out, 1u << 16);
        e2e_sim_stop(x, x->n_dev - 1);
        free(out);
}

static void test_plug_faults(void **state)
{
        /* the device vanishes on the request after the credential's write (the final hash):
         * the credential is on the device, the unit is retried and gets a new one */
        static const char *const disconnect[] = {"--disconnect-after", "23", NULL};
        static const char *const pop[] = {"--bad-pop", NULL};
        static const char *const stuck[] = {"--stuck-fuse", "debug_disable:0", NULL};
        static const char *const line[] = {"--corrupt-rate", "0.0003", "--drop-rate", "0.0002",
                                           "--noise",        "--seed", "11",          NULL};
        struct secrets *ss = calloc(1, sizeof(*ss));
        struct e2e x;

        (void)state;
        assert_non_null(ss);
        setup(&x, "plug-faults");
        fault_then_again(&x, "smartplug-ctm.yaml", "smartplug-a1", disconnect, OUT_JSON, PIN_FILE);
        fault_then_again(&x, "smartplug-ctm.yaml", "smartplug-a1", pop, OUT_LINES, PIN_ENV_VAR);
        fault_then_again(&x, "smartplug-ctm.yaml", "smartplug-a1", stuck, OUT_TTY, PIN_ENV_VAR);
        fault_then_again(&x, "smartplug-ctm.yaml", "smartplug-a1", line, OUT_LINES, PIN_FILE);
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM units WHERE verdict = 'PASS'"), 3);
        secrets_base(ss);
        check_no_secret(&x, ss);
        e2e_teardown(&x);
        free(ss);
}

static void test_gateway_faults(void **state)
{
        static const char *const cut[] = {"--power-cut", "mac0", NULL};
        static const char *const disconnect[] = {"--disconnect-after", "30", NULL};
        static const char *const line[] = {"--corrupt-rate", "0.0003", "--noise",
                                           "--seed",         "5",      NULL};
        struct secrets *ss = calloc(1, sizeof(*ss));
        struct e2e x;

        (void)state;
        assert_non_null(ss);
        setup(&x, "gw-faults");
        fault_then_again(&x, "gateway-industrial.yaml", "gateway-g2", cut, OUT_JSON, PIN_FILE);
        fault_then_again(&x, "gateway-industrial.yaml", "gateway-g2", disconnect, OUT_TTY,
                         PIN_ENV_VAR);
        fault_then_again(&x, "gateway-industrial.yaml", "gateway-g2", line, OUT_JSON, PIN_ENV_VAR);
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM units WHERE verdict = 'PASS'"), 2);
        secrets_base(ss);
        check_no_secret(&x, ss);
        e2e_teardown(&x);
        free(ss);
}

/* Read kiln's stdout until marker; 0 when it came. */
static int wait_marker(int fd, const char *marker, char *buf, size_t cap, size_t *len)
{
        time_t deadline = time(NULL) + 120;

        while (time(NULL) < deadline) {
                struct pollfd p = {.fd = fd, .events = POLLIN};
                ssize_t k;

                if (strstr(buf, marker) != NULL)
                        return 0;
                if (poll(&p, 1, 200) <= 0)
                        continue;
                k = read(fd, buf + *len, cap - 1 - *len);
                if (k <= 0)
                        return -1;
                *len += (size_t)k;
                buf[*len] = '\0';
        }
        return -1;
}

/* kill -9 in the middle of the lock: the WAL and -shm are left as they are, then resumed. */
static void test_kill_then_resume(void **state)
{
        static const char *const slow[] = {"--product", "gateway-g2", "--fuse-ms", "600", NULL};
        struct secrets *ss = calloc(1, sizeof(*ss));
        char *buf = calloc(1, 1u << 16), *out = malloc(1u << 16);
        size_t len = 0;
        struct e2e x;
        int fd, pid;

        (void)state;
        assert_non_null(ss);
        assert_non_null(buf);
        assert_non_null(out);
        setup(&x, "kill");
        e2e_sim(&x, NULL, slow);
        config(&x, PIN_ENV_VAR);
        pid = e2e_kiln_run_bg(&x, "gateway-industrial.yaml", NULL, &fd);
        assert_int_equal(wait_marker(fd, "\"step\":\"lock\"", buf, 1u << 16, &len), 0);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(fd);
        keep_output(&x, "killed", buf, "");
        /* the killed run's files, before anything reopens them */
        secrets_base(ss);
        secrets_devices(ss, &x);
        {
                struct scan sc = {.ss = ss};

                scan_dir(&sc, x.dir);
                assert_true(sc.saw_db);
        }
        assert_int_equal(station(&x, "gateway-industrial.yaml", OUT_JSON, out, 1u << 16), 0);
        expect_pass(out);
        check_no_secret(&x, ss);
        e2e_teardown(&x);
        free(ss);
        free(buf);
        free(out);
}

/*
 * kiln aborted (SIGABRT, core dumps allowed) while it holds a device password that the device
 * has already stored: the simulator is frozen right after it logs the credential object, so the
 * station is still waiting for that write to be acknowledged and keeps the password in memory.
 */
static void test_no_secret_in_core(void **state)
{
        static const char *const slow[] = {"--flash-ms-per-kib", "5000", NULL};
        struct secrets *ss = calloc(1, sizeof(*ss));
        char recipe[1200], logp[1200], core[1200], *buf = calloc(1, 1u << 16);
        const char *argv[16];
        struct rlimit unlimited = {RLIM_INFINITY, RLIM_INFINITY};
        int po[2], status = 0, stored = 0;
        size_t len = 0;
        struct e2e x;
        pid_t pid;

        (void)state;
        assert_non_null(ss);
        assert_non_null(buf);
        setup(&x, "core");
        e2e_sim(&x, NULL, slow);
        config(&x, PIN_FILE);
        e2e_recipe_path(&x, "smartplug-ctm.yaml", recipe, sizeof(recipe));
        argv[0] = x.kiln;
        argv[1] = "run";
        argv[2] = "--config";
        argv[3] = x.config;
        argv[4] = "--recipe";
        argv[5] = recipe;
        argv[6] = "--work-order";
        argv[7] = "WO-SECRETS";
        argv[8] = "--operator";
        argv[9] = "secrets-operator";
        argv[10] = "--once";
        argv[11] = "--json";
        argv[12] = NULL;
        assert_int_equal(pipe(po), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                /* core files in the test directory, as big as they come */
                if (chdir(x.dir) != 0)
                        _exit(126);
                /* the pin_file run: the PIN is not in this process's environment either */
                unsetenv(PIN_ENV);
                setrlimit(RLIMIT_CORE, &unlimited);
                dup2(po[1], 1);
                close(po[0]);
                execv(argv[0], (char *const *)(uintptr_t)argv);
                _exit(127);
        }
        close(po[1]);
        snprintf(logp, sizeof(logp), "%s/dev-%s.log", x.dir, x.uid[0]);
        for (unsigned waited = 0; waited < 120000 && !stored; waited += 1) {
                struct timespec ts = {0, 1000000};
                FILE *f = fopen(logp, "r");
                char line[512];

                while (f != NULL && fgets(line, sizeof(line), f) != NULL)
                        stored |= strstr(line, "object 'admin_pw' complete") != NULL;
                if (f != NULL)
                        fclose(f);
                if (!stored)
                        nanosleep(&ts, NULL);
        }
        assert_true(stored);
        kill(x.dev[0].pid, SIGSTOP);
        /* kiln cannot have finished the write: the device has not acknowledged it */
        {
                struct pollfd p = {.fd = po[0], .events = POLLIN};

                while (poll(&p, 1, 0) > 0 && len < (1u << 16) - 1) {
                        ssize_t k = read(po[0], buf + len, (1u << 16) - 1 - len);

                        if (k <= 0)
                                break;
                        len += (size_t)k;
                }
                buf[len] = '\0';
        }
        if (strstr(buf, "\"step\":\"write\"") != NULL)
                fail_msg("kiln finished the write before it could be aborted:\n%s", buf);
        kill(pid, SIGABRT);
        waitpid(pid, &status, 0);
        close(po[0]);
        /* the device logs the object before it saves it: stopping it saves its state */
        kill(x.dev[0].pid, SIGCONT);
        e2e_sim_stop(&x, 0);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
        /* the password is on the device: it is the secret the core must not hold */
        secrets_base(ss);
        secrets_devices(ss, &x);
        snprintf(core, sizeof(core), "%s/core", x.dir);
        if (access(core, F_OK) != 0)
                snprintf(core, sizeof(core), "%s/core.%d", x.dir, (int)pid);
        if (access(core, F_OK) == 0) {
                struct scan sc = {.ss = ss};

                scan_file(&sc, core);
                fail_msg("kiln left a core file (%s): it must not dump core at all", core);
        }
        if (WCOREDUMP(status))
                fail_msg("kiln dumped core (to the system's core handler)");
        e2e_teardown(&x);
        free(ss);
        free(buf);
}

/* The HSM's keys cannot leave it: sensitive, not extractable, CKA_VALUE refused. */
static void test_hsm_keys_not_extractable(void **state)
{
        static const CK_OBJECT_CLASS classes[] = {CKO_PRIVATE_KEY, CKO_SECRET_KEY};
        char conf[1100];
        struct p11 p;
        CK_SESSION_HANDLE s;
        unsigned keys = 0;
        struct e2e x;

        (void)state;
        setup(&x, "hsm");
        snprintf(conf, sizeof(conf), "%s/softhsm2.conf", pki);
        setenv("SOFTHSM2_CONF", conf, 1);
        p11_open(&p);
        assert_int_equal(p.f->C_OpenSession(p.slot, CKF_SERIAL_SESSION, NULL, NULL, &s), CKR_OK);
        assert_int_equal(p.f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)KNOWN_PIN, strlen(KNOWN_PIN)),
                         CKR_OK);
        for (unsigned c = 0; c < 2; c++) {
                CK_OBJECT_CLASS cls = classes[c];
                CK_ATTRIBUTE tmpl = {CKA_CLASS, &cls, sizeof(cls)};
                CK_OBJECT_HANDLE h[32];
                CK_ULONG n = 0;

                assert_int_equal(p.f->C_FindObjectsInit(s, &tmpl, 1), CKR_OK);
                assert_int_equal(p.f->C_FindObjects(s, h, 32, &n), CKR_OK);
                p.f->C_FindObjectsFinal(s);
                for (CK_ULONG i = 0; i < n; i++) {
                        CK_BBOOL sensitive = CK_FALSE, extractable = CK_TRUE;
                        CK_ATTRIBUTE a[] = {{CKA_SENSITIVE, &sensitive, sizeof(sensitive)},
                                            {CKA_EXTRACTABLE, &extractable, sizeof(extractable)}};
                        uint8_t value[512];
                        CK_ATTRIBUTE v = {CKA_VALUE, value, sizeof(value)};
                        CK_RV rv;

                        assert_int_equal(p.f->C_GetAttributeValue(s, h[i], a, 2), CKR_OK);
                        assert_true(sensitive == CK_TRUE);
                        assert_true(extractable == CK_FALSE);
                        rv = p.f->C_GetAttributeValue(s, h[i], &v, 1);
                        if (rv != CKR_ATTRIBUTE_SENSITIVE)
                                fail_msg("key %lu of class %lu: CKA_VALUE read gave %#lx", i,
                                         (unsigned long)cls, (unsigned long)rv);
                        assert_true(v.ulValueLen == CK_UNAVAILABLE_INFORMATION);
                        keys++;
                }
        }
        p.f->C_Logout(s);
        p.f->C_CloseSession(s);
        p11_close(&p);
        /* root, issuing, audit, release and officer keys, and the commitment key */
        assert_true(keys >= 4);
        e2e_teardown(&x);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_hsm_keys_not_extractable),
            cmocka_unit_test(test_plug_json_pin_file),
            cmocka_unit_test(test_plug_terminal_pin_env),
            cmocka_unit_test(test_gateway_json_pin_env),
            cmocka_unit_test(test_gateway_terminal_pin_file),
            cmocka_unit_test(test_plug_faults),
            cmocka_unit_test(test_gateway_faults),
            cmocka_unit_test(test_kill_then_resume),
            cmocka_unit_test(test_no_secret_in_core),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
