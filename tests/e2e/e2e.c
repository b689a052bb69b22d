/* End-to-end harness (see e2e.h). */
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sqlite3.h>

#include "e2e.h"

#define KILN_TIMEOUT_S 180

static char shared_hsm[1024];

static const char *env_or(const char *name, const char *dflt)
{
        const char *v = getenv(name);
        return v != NULL && v[0] ? v : dflt;
}

static void run_checked(const char *cmd)
{
        int st = system(cmd);

        if (st != 0)
                fail_msg("command failed (%d): %s", st, cmd);
}

void e2e_recipe_path(const struct e2e *x, const char *file, char *out, size_t cap)
{
        snprintf(out, cap, "%s/recipes/%s", x->src, file);
}

void e2e_setup(struct e2e *x, const char *name)
{
        char build[512], src[512], cmd[3072], base[600];

        /* absolute paths: they end up in SoftHSM and station configuration files */
        if (realpath(env_or("KILN_BUILD_DIR", "."), build) == NULL ||
            realpath(env_or("KILN_SOURCE_DIR", ".."), src) == NULL)
                fail_msg("cannot resolve KILN_BUILD_DIR / KILN_SOURCE_DIR: %s", strerror(errno));
        memset(x, 0, sizeof(*x));
        snprintf(x->kiln, sizeof(x->kiln), "%s/kiln", build);
        snprintf(x->sim, sizeof(x->sim), "%s/kiln-dut-sim", build);
        snprintf(x->src, sizeof(x->src), "%s", src);
        snprintf(base, sizeof(base), "%s/e2e-tmp", build);
        mkdir(base, 0700);
        /* one development PKI per test executable: its own token, under the build directory */
        if (shared_hsm[0] == '\0') {
                char tmpl[800];

                snprintf(tmpl, sizeof(tmpl), "%s/pki-XXXXXX", base);
                if (mkdtemp(tmpl) == NULL)
                        fail_msg("mkdtemp: %s", strerror(errno));
                snprintf(shared_hsm, sizeof(shared_hsm), "%s/hsm", tmpl);
                snprintf(cmd, sizeof(cmd), "'%s' hsm init-dev --dir '%s' >/dev/null", x->kiln,
                         shared_hsm);
                run_checked(cmd);
        }
        snprintf(x->hsm, sizeof(x->hsm), "%s", shared_hsm);
        snprintf(x->dir, sizeof(x->dir), "%s/%s-XXXXXX", base, name);
        if (mkdtemp(x->dir) == NULL)
                fail_msg("mkdtemp: %s", strerror(errno));
        snprintf(x->db, sizeof(x->db), "%s/kiln.db", x->dir);
        snprintf(x->config, sizeof(x->config), "%s/station.yaml", x->dir);
}

void e2e_teardown(struct e2e *x)
{
        for (unsigned i = 0; i < x->n_dev; i++)
                simfix_stop(&x->dev[i], 3000, NULL);
}

static void sim_start(struct e2e *x, unsigned i, int fresh, const char *const *extra)
{
        char state[1200], logp[1200];
        const char *args[40];
        unsigned n = 0;

        snprintf(state, sizeof(state), "%s/dev-%s.state", x->dir, x->uid[i]);
        snprintf(logp, sizeof(logp), "%s/dev-%s.log", x->dir, x->uid[i]);
        args[n++] = "--state";
        args[n++] = state;
        if (fresh) {
                args[n++] = "--uid";
                args[n++] = x->uid[i];
        }
        for (unsigned k = 0; extra != NULL && extra[k] != NULL && n < 38; k++)
                args[n++] = extra[k];
        args[n] = NULL;
        if (simfix_start(x->sim, args, logp, 10000, &x->dev[i]) != 0)
                fail_msg("cannot start kiln-dut-sim (log %s)", logp);
}

unsigned e2e_sim(struct e2e *x, const char *uid, const char *const *extra)
{
        unsigned i = x->n_dev;

        assert_true(i < E2E_SLOTS_MAX);
        if (uid != NULL) {
                snprintf(x->uid[i], sizeof(x->uid[i]), "%s", uid);
        } else {
                uint8_t b[8];

                assert_int_equal(RAND_bytes(b, sizeof(b)), 1);
                for (unsigned k = 0; k < sizeof(b); k++)
                        snprintf(x->uid[i] + 2 * k, 3, "%02x", b[k]);
        }
        sim_start(x, i, 1, extra);
        x->n_dev++;
        return i;
}

int e2e_sim_stop(struct e2e *x, unsigned i)
{
        int st = 0;

        simfix_stop(&x->dev[i], 3000, &st);
        return st;
}

void e2e_sim_restart(struct e2e *x, unsigned i, const char *const *extra)
{
        simfix_stop(&x->dev[i], 3000, NULL);
        sim_start(x, i, 0, extra);
}

void e2e_config(struct e2e *x)
{
        FILE *f = fopen(x->config, "w");

        assert_non_null(f);
        fprintf(f,
                "schema: 1\n"
                "station_id: e2e-station\n"
                "mode: development\n"
                "database: %s\n"
                "hsm:\n"
                "  module: /usr/lib/softhsm/libsofthsm2.so\n"
                "  token: \"pkcs11:token=kiln-dev\"\n"
                "  pin_file: %s/pin\n"
                "  softhsm_conf: %s/softhsm2.conf\n"
                "  audit_key: \"pkcs11:token=kiln-dev;object=kiln-dev-audit;type=private\"\n"
                "  commitment_key: \"pkcs11:token=kiln-dev;object=kiln-dev-commit;"
                "type=secret-key\"\n"
                "authority:\n"
                "  release_keys: [%s/release-pub.pem]\n"
                "  quota_keys: [%s/officer-pub.pem]\n"
                "slots:\n",
                x->db, x->hsm, x->hsm, x->hsm, x->hsm);
        for (unsigned i = 0; i < x->n_dev; i++)
                fprintf(f, "  - id: S%u\n    port: %s\n", i + 1, x->dev[i].port);
        fclose(f);
}

/* Fork/exec argv with stdout and stderr captured; kills it after KILN_TIMEOUT_S. */
static int spawn_capture(const char *const *argv, char *out, size_t out_cap, char *err,
                         size_t err_cap)
{
        int po[2], pe[2], status = 0;
        size_t no = 0, ne = 0;
        time_t deadline = time(NULL) + KILN_TIMEOUT_S;
        pid_t pid;

        assert_int_equal(pipe(po), 0);
        assert_int_equal(pipe(pe), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                dup2(po[1], 1);
                dup2(pe[1], 2);
                close(po[0]);
                close(pe[0]);
                execv(argv[0], (char *const *)(uintptr_t)argv);
                _exit(127);
        }
        close(po[1]);
        close(pe[1]);
        for (int open_fds = 2; open_fds > 0;) {
                struct pollfd p[2] = {{.fd = po[0], .events = POLLIN},
                                      {.fd = pe[0], .events = POLLIN}};
                int rc = poll(p, 2, 1000);

                if (time(NULL) > deadline) {
                        kill(pid, SIGKILL);
                        fail_msg("kiln did not finish within %d s", KILN_TIMEOUT_S);
                }
                if (rc <= 0)
                        continue;
                for (int k = 0; k < 2; k++) {
                        char buf[4096];
                        ssize_t n;

                        if (!(p[k].revents & (POLLIN | POLLHUP)) || p[k].fd < 0)
                                continue;
                        n = read(p[k].fd, buf, sizeof(buf));
                        if (n <= 0) {
                                close(k == 0 ? po[0] : pe[0]);
                                if (k == 0)
                                        po[0] = -1;
                                else
                                        pe[0] = -1;
                                open_fds--;
                                continue;
                        }
                        if (k == 0 && out != NULL && no + (size_t)n < out_cap) {
                                memcpy(out + no, buf, (size_t)n);
                                no += (size_t)n;
                        }
                        if (k == 1 && err != NULL && ne + (size_t)n < err_cap) {
                                memcpy(err + ne, buf, (size_t)n);
                                ne += (size_t)n;
                        }
                }
                if (po[0] < 0 && pe[0] < 0)
                        break;
        }
        if (out != NULL)
                out[no] = '\0';
        if (err != NULL)
                err[ne] = '\0';
        waitpid(pid, &status, 0);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

int e2e_kiln(struct e2e *x, const char *const *args, char *out, size_t out_cap, char *err,
             size_t err_cap)
{
        const char *argv[40];
        unsigned n = 0;

        argv[n++] = x->kiln;
        for (unsigned k = 0; args[k] != NULL && n < 39; k++)
                argv[n++] = args[k];
        argv[n] = NULL;
        return spawn_capture(argv, out, out_cap, err, err_cap);
}

static void json_field(const char *line, const char *key, char *out, size_t cap)
{
        char pat[64];
        const char *p;
        size_t n = 0;

        out[0] = '\0';
        snprintf(pat, sizeof(pat), "\"%s\":", key);
        p = strstr(line, pat);
        if (p == NULL)
                return;
        p += strlen(pat);
        if (*p == '"') {
                p++;
                while (*p && *p != '"' && n + 1 < cap)
                        out[n++] = *p++;
        } else {
                while (*p && *p != ',' && *p != '}' && n + 1 < cap)
                        out[n++] = *p++;
        }
        out[n] = '\0';
}

static void parse_units(struct e2e_run *r)
{
        char *save = NULL;
        char *copy = strdup(r->out);

        for (char *line = strtok_r(copy, "\n", &save); line != NULL;
             line = strtok_r(NULL, "\n", &save)) {
                struct e2e_unit *u;
                char tmp[32];

                if (strstr(line, "\"event\":\"unit\"") == NULL || r->n_unit == E2E_UNITS_MAX)
                        continue;
                u = &r->unit[r->n_unit++];
                json_field(line, "slot", u->slot, sizeof(u->slot));
                json_field(line, "serial", u->serial, sizeof(u->serial));
                json_field(line, "chip_uid", u->chip_uid, sizeof(u->chip_uid));
                json_field(line, "verdict", u->verdict, sizeof(u->verdict));
                json_field(line, "code", u->code, sizeof(u->code));
                json_field(line, "resumed", tmp, sizeof(tmp));
                u->resumed = strcmp(tmp, "true") == 0;
                json_field(line, "attempt", tmp, sizeof(tmp));
                u->attempt = (unsigned)strtoul(tmp, NULL, 10);
        }
        free(copy);
}

static unsigned run_args(struct e2e *x, const char *recipe, const char *const *extra,
                         const char **argv, char *recipe_path, size_t cap)
{
        unsigned n = 0;

        e2e_recipe_path(x, recipe, recipe_path, cap);
        argv[n++] = x->kiln;
        argv[n++] = "run";
        argv[n++] = "--config";
        argv[n++] = x->config;
        argv[n++] = "--recipe";
        argv[n++] = recipe_path;
        argv[n++] = "--work-order";
        argv[n++] = "WO-E2E";
        argv[n++] = "--operator";
        argv[n++] = "e2e-operator";
        argv[n++] = "--once";
        argv[n++] = "--json";
        for (unsigned k = 0; extra != NULL && extra[k] != NULL && n < 38; k++)
                argv[n++] = extra[k];
        argv[n] = NULL;
        return n;
}

void e2e_kiln_run(struct e2e *x, const char *recipe, const char *const *extra,
                  struct e2e_run *ret)
{
        const char *argv[40];
        char recipe_path[1200];

        memset(ret, 0, sizeof(*ret));
        run_args(x, recipe, extra, argv, recipe_path, sizeof(recipe_path));
        ret->status = spawn_capture(argv, ret->out, sizeof(ret->out), ret->err, sizeof(ret->err));
        parse_units(ret);
}

int e2e_kiln_run_bg(struct e2e *x, const char *recipe, const char *const *extra, int *ret_out_fd)
{
        const char *argv[40];
        char recipe_path[1200];
        int po[2];
        pid_t pid;

        run_args(x, recipe, extra, argv, recipe_path, sizeof(recipe_path));
        assert_int_equal(pipe(po), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                int devnull = open("/dev/null", O_WRONLY);

                dup2(po[1], 1);
                if (devnull >= 0)
                        dup2(devnull, 2);
                close(po[0]);
                execv(argv[0], (char *const *)(uintptr_t)argv);
                _exit(127);
        }
        close(po[1]);
        *ret_out_fd = po[0];
        return pid;
}

const struct e2e_unit *e2e_unit_by_slot(const struct e2e_run *r, const char *slot)
{
        for (unsigned i = 0; i < r->n_unit; i++)
                if (strcmp(r->unit[i].slot, slot) == 0)
                        return &r->unit[i];
        return NULL;
}

void e2e_sql(struct e2e *x, const char *sql, char *out, size_t cap)
{
        sqlite3 *h = NULL;
        sqlite3_stmt *st = NULL;

        out[0] = '\0';
        assert_int_equal(sqlite3_open_v2(x->db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK)
                fail_msg("SQL error in '%s': %s", sql, sqlite3_errmsg(h));
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) != NULL)
                snprintf(out, cap, "%s", (const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        sqlite3_close(h);
}

long e2e_sql_int(struct e2e *x, const char *sql)
{
        char v[64];

        e2e_sql(x, sql, v, sizeof(v));
        return strtol(v, NULL, 10);
}

static void check_chain(sqlite3 *h)
{
        sqlite3_stmt *st;
        char prev[65];
        long n = 0;

        memset(prev, '0', 64);
        prev[64] = '\0';
        assert_int_equal(sqlite3_prepare_v2(h, "SELECT seq, at, ifnull(unit_id, ''), kind, body, "
                                               "prev_hash, hash FROM events ORDER BY seq",
                                            -1, &st, NULL),
                         SQLITE_OK);
        while (sqlite3_step(st) == SQLITE_ROW) {
                EVP_MD_CTX *md = EVP_MD_CTX_new();
                uint8_t d[32];
                char hex[65], seq[24];

                snprintf(seq, sizeof(seq), "%lld", (long long)sqlite3_column_int64(st, 0));
                if (strcmp((const char *)sqlite3_column_text(st, 5), prev) != 0)
                        fail_msg("audit chain: event %s does not follow its predecessor", seq);
                EVP_DigestInit_ex(md, EVP_sha256(), NULL);
                EVP_DigestUpdate(md, prev, 64);
                EVP_DigestUpdate(md, "|", 1);
                EVP_DigestUpdate(md, seq, strlen(seq));
                for (int c = 1; c <= 4; c++) {
                        const char *t = (const char *)sqlite3_column_text(st, c);

                        EVP_DigestUpdate(md, "|", 1);
                        EVP_DigestUpdate(md, t, strlen(t));
                }
                EVP_DigestFinal_ex(md, d, NULL);
                EVP_MD_CTX_free(md);
                for (int k = 0; k < 32; k++)
                        snprintf(hex + 2 * k, 3, "%02x", d[k]);
                if (strcmp((const char *)sqlite3_column_text(st, 6), hex) != 0)
                        fail_msg("audit chain: event %s hash does not match its content", seq);
                memcpy(prev, hex, 65);
                n++;
        }
        sqlite3_finalize(st);
        assert_true(n > 0);
}

static long count(sqlite3 *h, const char *sql)
{
        sqlite3_stmt *st;
        long n = -1;

        if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK)
                fail_msg("SQL error in '%s': %s", sql, sqlite3_errmsg(h));
        if (sqlite3_step(st) == SQLITE_ROW)
                n = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return n;
}

static void verify_certs(const char *workdir, sqlite3 *h)
{
        sqlite3_stmt *st;
        char leaf[1200], chain[1200], cmd[3000];
        unsigned n = 0;

        assert_int_equal(sqlite3_prepare_v2(h, "SELECT c.der, ch.pem, c.cert_serial FROM "
                                               "certificates c JOIN chains ch ON ch.id = "
                                               "c.chain_id WHERE c.current = 1",
                                            -1, &st, NULL),
                         SQLITE_OK);
        snprintf(leaf, sizeof(leaf), "%s/verify-leaf.der", workdir);
        snprintf(chain, sizeof(chain), "%s/verify-chain.pem", workdir);
        while (sqlite3_step(st) == SQLITE_ROW) {
                FILE *f = fopen(leaf, "wb");
                const char *pem = (const char *)sqlite3_column_text(st, 1);
                const char *end = strstr(pem, "-----END CERTIFICATE-----");

                assert_non_null(f);
                fwrite(sqlite3_column_blob(st, 0), 1, (size_t)sqlite3_column_bytes(st, 0), f);
                fclose(f);
                f = fopen(chain, "w");
                assert_non_null(f);
                fputs(pem, f);
                fclose(f);
                assert_non_null(end);
                /* chain: issuing CA first (untrusted), root last (trust anchor) */
                snprintf(cmd, sizeof(cmd),
                         "cd '%s' && awk '/BEGIN CERT/{n++} {print > (\"ca\" n \".pem\")}' "
                         "verify-chain.pem && openssl x509 -inform DER -in verify-leaf.der "
                         "-out verify-leaf.pem && openssl verify -x509_strict -CAfile "
                         "\"ca$(ls ca*.pem | wc -l).pem\" -untrusted ca1.pem verify-leaf.pem "
                         ">/dev/null && rm -f ca*.pem",
                         workdir);
                if (system(cmd) != 0)
                        fail_msg("openssl verify -x509_strict failed for certificate %s",
                                 sqlite3_column_text(st, 2));
                n++;
        }
        sqlite3_finalize(st);
        if (n == 0)
                fail_msg("no certificate in the database to verify");
}

void e2e_verify_db_certs(const char *db_path, const char *workdir)
{
        sqlite3 *h = NULL;

        assert_int_equal(sqlite3_open_v2(db_path, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        verify_certs(workdir, h);
        sqlite3_close(h);
}

void e2e_check_invariants(struct e2e *x)
{
        sqlite3 *h = NULL;
        sqlite3_stmt *st;

        assert_int_equal(sqlite3_open_v2(x->db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(h, "PRAGMA integrity_check", -1, &st, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
        sqlite3_finalize(st);
        check_chain(h);
        /* no PASS without attestation of the current attempt and every burn verified */
        assert_int_equal(count(h, "SELECT count(*) FROM units u WHERE verdict = 'PASS' AND ("
                                  " NOT EXISTS (SELECT 1 FROM attestations a WHERE a.unit_id = "
                                  "u.id AND a.attempt = u.attempts AND a.ok = 1)"
                                  " OR EXISTS (SELECT 1 FROM fuse_journal f WHERE f.unit_id = "
                                  "u.id AND f.state <> 'done')"
                                  " OR NOT EXISTS (SELECT 1 FROM fuse_journal f WHERE f.unit_id = "
                                  "u.id)"
                                  " OR debug_closed IS NOT 1)"),
                         0);
        /* no fuse burned before steps 1-8 were recorded: every journal row was written by the
         * unit's verified transaction, and no result was recorded before it */
        assert_int_equal(count(h, "SELECT count(*) FROM fuse_journal f WHERE NOT EXISTS (SELECT 1 "
                                  "FROM events e, json_each(e.body, '$.intents') j WHERE "
                                  "e.unit_id = f.unit_id AND e.kind = 'unit.verified' AND "
                                  "json_extract(j.value, '$.id') = f.id) OR f.result_at < "
                                  "f.intent_at"),
                         0);
        /* never two different values for one field of one unit */
        assert_int_equal(count(h, "SELECT count(*) FROM (SELECT unit_id, field FROM fuse_journal "
                                  "GROUP BY unit_id, field HAVING count(DISTINCT value) > 1)"),
                         0);
        /* FAIL only before the lock; quota reservations match in-progress units */
        assert_int_equal(count(h, "SELECT count(*) FROM units WHERE verdict = 'FAIL' AND "
                                  "lock_started = 1"),
                         0);
        assert_int_equal(count(h, "SELECT count(*) FROM work_orders w WHERE reserved <> (SELECT "
                                  "count(*) FROM units u WHERE u.work_order = w.id AND "
                                  "u.quota_state = 'reserved')"),
                         0);
        assert_int_equal(count(h, "SELECT count(*) FROM work_orders w WHERE consumed <> (SELECT "
                                  "count(*) FROM units u WHERE u.work_order = w.id AND "
                                  "u.quota_state = 'consumed')"),
                         0);
        /* allocations are unique by schema; no unit holds a sequence its counter has not passed */
        assert_int_equal(count(h, "SELECT count(*) FROM units u WHERE serial_seq >= (SELECT "
                                  "min(next) FROM counters c WHERE c.name LIKE 'serial:%')"),
                         0);
        if (count(h, "SELECT count(*) FROM certificates WHERE current = 1") > 0)
                verify_certs(x->dir, h);
        sqlite3_close(h);
}
