/*
 * Quality outputs on a real lot that contains failed units too: audit verification and tamper
 * detection (edits made directly in the SQLite file), signed export manifests checked with the
 * openssl CLI, filtered exports, trace by every identifier, and the evidence pack.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "e2e.h"

#define GW "gateway-industrial.yaml"

static struct e2e lot;     /* provisioned once, copied per tamper case */
static char pass_serial[64], fail_serial[64], locked_serial[64];
static char pubkey[1200];

/* Three gateways: one PASS, one FAIL (bad proof of possession), one LOCK_FAILED (stuck fuse). */
static int lot_setup(void **state)
{
        static const char *const ok[] = {"--product", "gateway-g2", NULL};
        static const char *const badpop[] = {"--product", "gateway-g2", "--bad-pop", NULL};
        static const char *const stuck[] = {"--product", "gateway-g2", "--stuck-fuse",
                                            "debug_disable:0", NULL};
        struct e2e_run *r = calloc(1, sizeof(*r));
        const struct e2e_unit *u;

        (void)state;
        e2e_setup(&lot, "quality");
        e2e_sim(&lot, NULL, ok);
        e2e_sim(&lot, NULL, badpop);
        e2e_sim(&lot, NULL, stuck);
        e2e_config(&lot);
        e2e_kiln_run(&lot, GW, NULL, r);
        if (r->n_unit != 3)
                fail_msg("expected 3 units:\n%s\n%s", r->out, r->err);
        u = e2e_unit_by_slot(r, "S1");
        assert_string_equal(u->verdict, "PASS");
        snprintf(pass_serial, sizeof(pass_serial), "%s", u->serial);
        u = e2e_unit_by_slot(r, "S2");
        assert_string_equal(u->code, "E-POP");
        snprintf(fail_serial, sizeof(fail_serial), "%s", u->serial);
        u = e2e_unit_by_slot(r, "S3");
        assert_string_equal(u->verdict, "LOCK_FAILED");
        snprintf(locked_serial, sizeof(locked_serial), "%s", u->serial);
        snprintf(pubkey, sizeof(pubkey), "%s/audit-pub.pem", lot.hsm);
        e2e_teardown(&lot);
        free(r);
        return 0;
}

static int audit(struct e2e *x, const char *db, char *out, size_t cap)
{
        const char *args[] = {"audit", "verify", "--db", db, "--audit-key", pubkey, NULL};

        return e2e_kiln(x, args, out, cap, NULL, 0);
}

static void test_audit_intact(void **state)
{
        char out[2048];

        (void)state;
        assert_int_equal(audit(&lot, lot.db, out, sizeof(out)), 0);
        assert_non_null(strstr(out, "audit ok: "));
        assert_non_null(strstr(out, "1 signed checkpoints"));
        e2e_check_invariants(&lot);
}

/* Copy the database, apply SQL directly to the file, expect audit verify to fail naming `expect`. */
static void tamper(const char *name, const char *sql, const char *expect)
{
        char copy[1300], cmd[3000], out[2048];
        sqlite3 *h;
        char *err = NULL;

        snprintf(copy, sizeof(copy), "%s/tamper-%s.db", lot.dir, name);
        snprintf(cmd, sizeof(cmd), "sqlite3 '%s' \".backup '%s'\"", lot.db, copy);
        assert_int_equal(system(cmd), 0);
        assert_int_equal(sqlite3_open(copy, &h), SQLITE_OK);
        if (sqlite3_exec(h, sql, NULL, NULL, &err) != SQLITE_OK)
                fail_msg("tamper SQL '%s' failed: %s", name, err);
        sqlite3_close(h);
        if (audit(&lot, copy, out, sizeof(out)) != 1)
                fail_msg("audit did not catch '%s':\n%s", name, out);
        if (strstr(out, "audit FAILED: ") == NULL || strstr(out, expect) == NULL)
                fail_msg("audit caught '%s' but said:\n%s\n(expected '%s')", name, out, expect);
}

static void test_audit_catches_edits(void **state)
{
        char sql[512];

        (void)state;
        /* a failed unit made to look good */
        snprintf(sql, sizeof(sql), "UPDATE units SET verdict = 'PASS', fail_code = NULL, "
                                   "fail_reason = NULL WHERE serial = '%s'",
                 locked_serial);
        tamper("verdict", sql, locked_serial);
        snprintf(sql, sizeof(sql), "UPDATE units SET serial = 'GW-FORGED' WHERE serial = '%s'",
                 pass_serial);
        tamper("serial", sql, "GW-FORGED");
        snprintf(sql, sizeof(sql), "UPDATE macs SET mac = '02:4b:49:0f:ff:fe' WHERE idx = 1 AND "
                                   "unit_id = (SELECT id FROM units WHERE serial = '%s')",
                 pass_serial);
        tamper("mac", sql, pass_serial);
        tamper("certificate", "UPDATE certificates SET der = x'300100' WHERE current = 1",
               "differs");
        tamper("fuse", "UPDATE fuse_journal SET readback = '00' WHERE field = 'debug_disable' "
                       "AND state = 'done'",
               "differs");
        tamper("operator", "UPDATE units SET operator = 'mallory'", "differs");
        tamper("recipe", "UPDATE recipes SET recipe_id = 'other'", "differs");
        tamper("pubkey", "UPDATE keys SET pubkey_sha256 = '00' || substr(pubkey_sha256, 3)",
               "differs");
}

static void test_audit_catches_log_changes(void **state)
{
        (void)state;
        tamper("delete-event", "DROP TRIGGER events_no_delete; DELETE FROM events WHERE seq = 3",
               "event 4: expected event 3");
        tamper("edit-event", "DROP TRIGGER events_no_update; UPDATE events SET body = "
                             "replace(body, 'E-POP', 'E-OK') WHERE kind = 'unit.finish'",
               "was edited");
        tamper("reorder", "DROP TRIGGER events_no_update; UPDATE events SET seq = seq + 1000 "
                          "WHERE seq = 4; UPDATE events SET seq = 4 WHERE seq = 5; UPDATE events "
                          "SET seq = 5 WHERE seq = 1004",
               "event 4");
        tamper("insert-event", "INSERT INTO events (seq, at, unit_id, kind, body, prev_hash, hash) "
                               "SELECT max(seq) + 1, '2026-01-01T00:00:00.000Z', NULL, 'x', '{}', "
                               "'0', '0' FROM events",
               "does not follow");
        tamper("truncate", "DROP TRIGGER events_no_delete; DELETE FROM events WHERE seq > 10",
               "events were deleted from the end");
        tamper("insert-unit", "INSERT INTO units (chip_uid, serial, serial_seq, work_order, lot, "
                              "station_id, slot, operator, recipe_sha256, product_id, hw_revision, "
                              "fw_version, fw_sha256, verdict, quota_state, dev_mode, started_at) "
                              "SELECT 'ff', 'GW-GHOST', 9999, work_order, lot, station_id, slot, "
                              "operator, recipe_sha256, product_id, hw_revision, fw_version, "
                              "fw_sha256, 'PASS', 'consumed', 1, started_at FROM units LIMIT 1",
               "GW-GHOST");
        tamper("checkpoint-signature", "UPDATE checkpoints SET signature = x'3006020101020101'",
               "signature does not verify");
}

static void test_manifest_and_filters(void **state)
{
        char csv[1300], man[1300], cmd[8000], *out = calloc(1, 1 << 20);
        const char *exp[] = {"export",     "--db",   lot.db, "--format", "csv",
                             "-o",         csv,      "--manifest", man, "--config",
                             lot.config,   NULL};
        const char *pass_only[] = {"export", "--db", lot.db, "--verdict", "PASS", NULL};
        const char *none[] = {"export", "--db", lot.db, "--work-order", "NO-SUCH-WO", NULL};

        (void)state;
        snprintf(csv, sizeof(csv), "%s/lot.csv", lot.dir);
        snprintf(man, sizeof(man), "%s/lot.manifest.json", lot.dir);
        assert_int_equal(e2e_kiln(&lot, exp, NULL, 0, NULL, 0), 0);
        /* the openssl CLI alone checks the signature; the hash matches the file */
        snprintf(cmd, sizeof(cmd),
                 "openssl dgst -sha256 -verify '%s' -signature '%s.sig' '%s' | grep -q "
                 "'Verified OK' && grep -q \"\\\"sha256\\\":\\\"$(sha256sum '%s' | cut -c1-64)\\\"\" "
                 "'%s' && grep -q '\"records\":3' '%s'",
                 pubkey, man, man, csv, man, man);
        if (system(cmd) != 0)
                fail_msg("manifest check failed: %s", cmd);
        /* a changed export no longer matches its manifest */
        snprintf(cmd, sizeof(cmd),
                 "sed -i 's/PASS/FAIL/' '%s' && ! grep -q \"$(sha256sum '%s' | cut -c1-64)\" '%s'",
                 csv, csv, man);
        assert_int_equal(system(cmd), 0);
        assert_int_equal(e2e_kiln(&lot, pass_only, out, 1 << 20, NULL, 0), 0);
        assert_non_null(strstr(out, pass_serial));
        assert_null(strstr(out, fail_serial));
        assert_int_equal(e2e_kiln(&lot, none, out, 1 << 20, NULL, 0), 0);
        assert_string_equal(out, "");
        free(out);
}

static void test_trace(void **state)
{
        char *out = calloc(1, 1 << 20), mac[64], uid[80], cert[80], sql[256];
        const char *ids[4];

        (void)state;
        snprintf(sql, sizeof(sql), "SELECT mac FROM macs m JOIN units u ON u.id = m.unit_id WHERE "
                                   "u.serial = '%s' AND idx = 1",
                 pass_serial);
        e2e_sql(&lot, sql, mac, sizeof(mac));
        snprintf(sql, sizeof(sql), "SELECT chip_uid FROM units WHERE serial = '%s'", pass_serial);
        e2e_sql(&lot, sql, uid, sizeof(uid));
        snprintf(sql, sizeof(sql), "SELECT cert_serial FROM certificates c JOIN units u ON u.id = "
                                   "c.unit_id WHERE u.serial = '%s' LIMIT 1",
                 pass_serial);
        e2e_sql(&lot, sql, cert, sizeof(cert));
        ids[0] = pass_serial;
        ids[1] = mac;
        ids[2] = uid;
        ids[3] = cert;
        for (int i = 0; i < 4; i++) {
                const char *args[] = {"trace", ids[i], "--db", lot.db, NULL};

                assert_int_equal(e2e_kiln(&lot, args, out, 1 << 20, NULL, 0), 0);
                assert_non_null(strstr(out, pass_serial));
                assert_non_null(strstr(out, "Fuse journal"));
                assert_non_null(strstr(out, "mac0"));
                assert_non_null(strstr(out, "lock.lockout"));
                assert_non_null(strstr(out, "Audit events"));
        }
        {
                const char *args[] = {"trace", locked_serial, "--db", lot.db, "--json", NULL};

                assert_int_equal(e2e_kiln(&lot, args, out, 1 << 20, NULL, 0), 0);
                assert_non_null(strstr(out, "\"verdict\":\"LOCK_FAILED\""));
                assert_non_null(strstr(out, "\"state\":\"failed\""));
        }
        {
                const char *args[] = {"trace", "NOPE", "--db", lot.db, NULL};

                assert_int_equal(e2e_kiln(&lot, args, out, 1 << 20, NULL, 0), 1);
        }
        free(out);
}

static void test_evidence_with_failed_units(void **state)
{
        char *out = calloc(1, 1 << 20);
        const char *json[] = {"evidence", "--db", lot.db, "--work-order", "WO-E2E", "--format",
                              "json", NULL};
        const char *md[] = {"evidence", "--db", lot.db, "--work-order", "WO-E2E", "--format",
                            "md", NULL};

        (void)state;
        assert_int_equal(e2e_kiln(&lot, json, out, 1 << 20, NULL, 0), 0);
        assert_non_null(strstr(out, "\"units\":{\"total\":3,\"pass\":1,\"fail\":1,"
                                    "\"lock_failed\":1,\"scrap\":0,\"in_progress\":0}"));
        /* failed units do not count against items: measured on the one PASS unit */
        assert_non_null(strstr(out, "\"secure_boot\":{\"value\":true,\"status\":\"verified\""));
        assert_non_null(strstr(out, "\"debug_disabled_in_production\":{\"value\":true"));
        assert_non_null(strstr(out, "\"trusted_keys_managed\":{\"value\":true"));
        /* what the station cannot measure is not claimed */
        assert_non_null(strstr(out, "\"disclosure_channel\":{\"value\":null,\"status\":"
                                    "\"declared\""));
        /* the failed units are listed with their codes */
        assert_non_null(strstr(out, fail_serial));
        assert_non_null(strstr(out, "\"code\":\"E-POP\""));
        assert_non_null(strstr(out, "\"code\":\"E-FUSE-READBACK\""));
        assert_non_null(strstr(out, "\"audit_ok\":true"));
        assert_int_equal(e2e_kiln(&lot, md, out, 1 << 20, NULL, 0), 0);
        assert_non_null(strstr(out, "# Compliance evidence pack — work order WO-E2E"));
        assert_non_null(strstr(out, "## Units that did not pass"));
        assert_non_null(strstr(out, locked_serial));
        free(out);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_audit_intact),
                cmocka_unit_test(test_audit_catches_edits),
                cmocka_unit_test(test_audit_catches_log_changes),
                cmocka_unit_test(test_manifest_and_filters),
                cmocka_unit_test(test_trace),
                cmocka_unit_test(test_evidence_with_failed_units),
        };
        return cmocka_run_group_tests(tests, lot_setup, NULL);
}
