/*
 * The per-lot compliance evidence pack (kiln evidence).
 *
 * Each checklist item is decided from what the station measured on every PASS unit of the work
 * order and from the recipe's product declarations:
 *
 *   value true   verified: measured on every PASS unit (and declared, where the item needs it)
 *   value false  not met: a PASS unit lacks it, the recipe does not do it, or the maker does not
 *                declare it
 *   value null   the station cannot evidence it; `declared` says what the maker declares
 *
 * Units that did not pass are listed, not counted against items: they were not shipped.
 * The pack also runs the audit verification, so it says whether the records it rests on are intact.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kiln/audit.h"
#include "kiln/error.h"
#include "kiln/evidence.h"
#include "kiln/export.h"
#include "kiln/json.h"
#include "kiln/recipe.h"
#include "kiln/util.h"

#define EXCEPTIONS_MAX 50u /* serials listed per item; the count is always exact */
#define NOT_PASSED_MAX 1000u

enum item_id {
        I_SIGNED_IMAGES,
        I_ROLLBACK,
        I_RECOVERY,
        I_SECURE_BOOT,
        I_DEBUG_DISABLED,
        I_TRUSTED_KEYS,
        I_DEFAULT_PASSWORDS,
        I_API_AUTH,
        I_LOCAL_IF,
        I_DISCLOSURE,
        I_UPDATE_POLICY,
        I_INVENTORY,
        I_SEC_FEATURES_DOC,
        I_LIFECYCLE_SUPPORT,
        I_CUSTOMER_INFO,
        I_MAX
};

struct item_def {
        const char *category;
        const char *id;
        const char *title;
        const char *etsi;  /* ETSI EN 303 645 provisions */
        const char *en18031; /* EN 18031-1 mechanisms */
        const char *cra;   /* CRA Annex I */
        const char *ctm;   /* U.S. Cyber Trust Mark (NISTIR 8425 baseline capability) */
};

static const struct item_def items[I_MAX] = {
        [I_SIGNED_IMAGES] = {"firmware_update", "signed_images",
                             "Firmware images are signed and verified before they run", "5.3-2, 5.7-1",
                             "SUM-2, SUM-3", "I(2)(f); II(7)", "Software Update"},
        [I_ROLLBACK] = {"firmware_update", "rollback_protection",
                        "Older, vulnerable firmware cannot be installed again", "5.3",
                        "SUM-2", "I(2)(c), I(2)(f)", "Software Update"},
        [I_RECOVERY] = {"firmware_update", "recovery_partition",
                        "A failed update can be recovered from", "5.9", "RLM-1",
                        "I(2)(h)", "Software Update"},
        [I_SECURE_BOOT] = {"boot_chain", "secure_boot", "Secure boot is enforced", "5.7-1",
                           "SUM-2, GEC-2", "I(2)(f)", "Data Protection"},
        [I_DEBUG_DISABLED] = {"boot_chain", "debug_disabled_in_production",
                              "Debug interfaces are permanently disabled in production", "5.6-4",
                              "ACM-1, GEC-2", "I(2)(j)", "Interface Access Control"},
        [I_TRUSTED_KEYS] = {"boot_chain", "trusted_keys_managed",
                            "Device keys are unique, generated on the device, certified by an "
                            "HSM-held CA and attested",
                            "5.4-1, 5.4-2", "SSM-1, SSM-2, CRY-1", "I(2)(d), I(2)(e)",
                            "Asset Identification, Data Protection"},
        [I_DEFAULT_PASSWORDS] = {"access_control", "default_passwords_removed",
                                 "No universal default password: each unit has its own", "5.1-1",
                                 "AUM-5", "I(2)(b), I(2)(d)", "Product Configuration"},
        [I_API_AUTH] = {"access_control", "api_authentication",
                        "Network interfaces authenticate their clients", "5.5-1, 5.1-3",
                        "AUM-1, ACM-1", "I(2)(d)", "Interface Access Control"},
        [I_LOCAL_IF] = {"access_control", "local_interfaces_protected",
                        "Local (physical) interfaces are protected", "5.6-1, 5.6-4", "ACM-1, GEC-2",
                        "I(2)(j)", "Interface Access Control"},
        [I_DISCLOSURE] = {"vulnerability_management", "disclosure_channel",
                          "A vulnerability disclosure channel is published", "5.2-1", "GEC-1",
                          "II(5), II(6)", "Information and Query Reception"},
        [I_UPDATE_POLICY] = {"vulnerability_management", "update_policy_defined",
                             "The update policy is defined and published", "5.3-13, 5.3-16",
                             "SUM-1", "II(2), II(8)", "Software Update, Documentation"},
        [I_INVENTORY] = {"vulnerability_management", "component_inventory_available",
                         "A component inventory (SBOM) is available", "5.3", "GEC-1", "II(1)",
                         "Documentation"},
        [I_SEC_FEATURES_DOC] = {"documentation", "security_features_documented",
                                "Security features are documented", "5.12", "GEC-4",
                                "Annex II", "Documentation, Product Education"},
        [I_LIFECYCLE_SUPPORT] = {"documentation", "lifecycle_support_defined",
                                 "The support period is defined", "5.3-13", "SUM-1",
                                 "Annex II(7)", "Documentation"},
        [I_CUSTOMER_INFO] = {"documentation", "customer_security_information_available",
                             "Security information for customers is available", "5.12",
                             "GEC-4", "Annex II", "Information Dissemination, Product Education"},
};

enum item_state {
        ST_VERIFIED,      /* value true */
        ST_NOT_MET,       /* value false */
        ST_DECLARED,      /* value null, declared true */
        ST_NOT_EVIDENCED, /* value null */
};

struct item_result {
        enum item_state state;
        int measured;       /* the station measures this item */
        int declared;       /* the maker declares it (-1: no declaration applies) */
        unsigned verified;  /* PASS units that evidence it */
        unsigned n_exc;     /* PASS units that do not */
        char exc[EXCEPTIONS_MAX][DB_SERIAL_MAX];
        char note[1024];
};

struct not_passed {
        char serial[DB_SERIAL_MAX];
        char verdict[16];
        char code[32];
        char reason[DB_DETAIL_MAX];
};

struct evidence {
        struct db *db;
        const struct recipe *rc;
        struct db_work_order wo;
        struct db_export_rec rec;
        unsigned total, pass, fail, lock_failed, scrap, in_progress;
        struct item_result item[I_MAX];
        struct not_passed *np;
        unsigned n_np, n_np_total;
        unsigned shared_creds;
        struct audit_report audit;
        int recipe_enforces_secure_boot, recipe_closes_debug, recipe_has_rollback_fuse;
        unsigned recipe_passwords, recipe_certs, recipe_attest;
        char first_started[32], last_finished[32];
};

static void unit_evidences(struct evidence *ev, enum item_id id, int ok, const char *serial)
{
        struct item_result *it = &ev->item[id];

        if (ok) {
                it->verified++;
                return;
        }
        if (it->n_exc < EXCEPTIONS_MAX)
                kiln_strlcpy(it->exc[it->n_exc], serial, DB_SERIAL_MAX);
        it->n_exc++;
}

/* Every fuse of the plan reads back its planned value on this unit. */
static int fuse_plan_holds(const struct evidence *ev, const struct db_export_rec *r,
                           int only_rollback)
{
        uint64_t macs[DB_MACS_MAX];
        struct recipe_values v;

        memset(&v, 0, sizeof(v));
        for (unsigned i = 0; i < r->n_macs; i++) {
                unsigned b[6];

                if (sscanf(r->macs[i], "%2x:%2x:%2x:%2x:%2x:%2x", &b[0], &b[1], &b[2], &b[3], &b[4],
                           &b[5]) != 6)
                        return 0;
                macs[i] = 0;
                for (int k = 0; k < 6; k++)
                        macs[i] = (macs[i] << 8) | b[k];
        }
        v.macs = macs;
        v.n_macs = r->n_macs;
        for (unsigned i = 0; i < ev->rc->n_fuses; i++) {
                const struct recipe_fuse *f = &ev->rc->fuses[i];
                uint8_t want[KILN_FUSE_BYTES_MAX];
                char hex[2 * KILN_FUSE_BYTES_MAX + 1];
                size_t len;
                int found = 0;

                if (only_rollback && strncmp(f->field, "rollback", 8) != 0)
                        continue;
                if (recipe_fuse_value(f, &v, want, &len) < 0)
                        return 0;
                kiln_hex_encode(want, len, hex, sizeof(hex));
                for (unsigned k = 0; k < r->n_fuses; k++)
                        if (strcmp(r->fuses[k].field, f->field) == 0)
                                found = strcmp(r->fuses[k].value, hex) == 0;
                if (!found)
                        return 0;
        }
        return 1;
}

static int visit_unit(void *p, int64_t unit_id)
{
        struct evidence *ev = p;
        const struct db_export_rec *r = &ev->rec;
        struct db_unit_facts f;
        int rr;

        rr = db_unit_export(ev->db, unit_id, &ev->rec);
        if (rr == KILN_OK)
                rr = db_unit_facts(ev->db, unit_id, &f);
        if (rr < 0)
                return rr;
        ev->total++;
        if (ev->first_started[0] == '\0' || strcmp(r->started_at, ev->first_started) < 0)
                kiln_strlcpy(ev->first_started, r->started_at, sizeof(ev->first_started));
        if (r->has_finished_at && strcmp(r->finished_at, ev->last_finished) > 0)
                kiln_strlcpy(ev->last_finished, r->finished_at, sizeof(ev->last_finished));
        if (strcmp(r->verdict, "PASS") != 0) {
                if (strcmp(r->verdict, "FAIL") == 0)
                        ev->fail++;
                else if (strcmp(r->verdict, "LOCK_FAILED") == 0)
                        ev->lock_failed++;
                else if (strcmp(r->verdict, "SCRAP") == 0)
                        ev->scrap++;
                else
                        ev->in_progress++;
                if (ev->n_np < NOT_PASSED_MAX) {
                        struct not_passed *n = &ev->np[ev->n_np++];

                        kiln_strlcpy(n->serial, r->serial, sizeof(n->serial));
                        kiln_strlcpy(n->verdict, r->verdict, sizeof(n->verdict));
                        kiln_strlcpy(n->code, r->has_fail_code ? r->fail_code : "",
                                     sizeof(n->code));
                        kiln_strlcpy(n->reason, r->has_fail_reason ? r->fail_reason : "",
                                     sizeof(n->reason));
                }
                ev->n_np_total++;
                return KILN_OK;
        }
        ev->pass++;
        {
                int sb = r->secure_boot == 1, dbg = r->debug_closed == 1;
                int prod = !ev->rc->lifecycle_final ||
                           (r->has_lifecycle && strcmp(r->lifecycle, "PRODUCTION") == 0);
                int plan = fuse_plan_holds(ev, r, 0);
                int keys = f.keys == ev->rc->n_keys && f.keys_pop_ok == f.keys &&
                           f.certs == ev->recipe_certs && f.attest_ok >= ev->recipe_attest;

                unit_evidences(ev, I_SIGNED_IMAGES, sb && plan, r->serial);
                unit_evidences(ev, I_ROLLBACK, fuse_plan_holds(ev, r, 1), r->serial);
                unit_evidences(ev, I_SECURE_BOOT, sb, r->serial);
                unit_evidences(ev, I_DEBUG_DISABLED, dbg && prod, r->serial);
                unit_evidences(ev, I_TRUSTED_KEYS, keys, r->serial);
                unit_evidences(ev, I_DEFAULT_PASSWORDS, f.creds >= ev->recipe_passwords,
                               r->serial);
                unit_evidences(ev, I_API_AUTH, f.certs > 0, r->serial);
                unit_evidences(ev, I_LOCAL_IF, dbg, r->serial);
        }
        return KILN_OK;
}

static int declared(const struct evidence *ev, enum recipe_decl d)
{
        return ev->rc->product.declared[d] != 0;
}

/* A measured item: verified when every PASS unit evidences it (and the declaration holds). */
static void decide_measured(struct evidence *ev, enum item_id id, int applies, int decl,
                            const char *not_applies)
{
        struct item_result *it = &ev->item[id];

        it->measured = applies;
        it->declared = decl;
        if (decl == 0) {
                it->state = ST_NOT_MET;
                snprintf(it->note, sizeof(it->note), "the maker does not declare it in the recipe");
        } else if (!applies) {
                it->state = decl == 1 ? ST_DECLARED : ST_NOT_MET;
                snprintf(it->note, sizeof(it->note), "%s", not_applies);
        } else if (ev->pass == 0) {
                it->state = ST_NOT_EVIDENCED;
                snprintf(it->note, sizeof(it->note), "no unit of this work order passed");
        } else if (it->n_exc > 0) {
                it->state = ST_NOT_MET;
                snprintf(it->note, sizeof(it->note), "%u of %u PASS units do not evidence it",
                         it->n_exc, ev->pass);
        } else {
                it->state = ST_VERIFIED;
                snprintf(it->note, sizeof(it->note), "measured on all %u PASS units", ev->pass);
        }
}

/* An item the station cannot measure: the maker's declaration (and what backs it) is all. */
static void decide_declared(struct evidence *ev, enum item_id id, int decl, const char *backing)
{
        struct item_result *it = &ev->item[id];

        it->measured = 0;
        it->declared = decl;
        it->state = decl ? ST_DECLARED : ST_NOT_MET;
        snprintf(it->note, sizeof(it->note), "%s%.900s",
                 decl ? "declared by the maker, not measurable by the station"
                      : "not declared by the maker",
                 backing && backing[0] ? backing : "");
}

static void decide(struct evidence *ev)
{
        const struct recipe_product *p = &ev->rc->product;
        char buf[600];
        time_t now = time(NULL);
        struct tm tm;

        decide_measured(ev, I_SIGNED_IMAGES, ev->recipe_enforces_secure_boot,
                        declared(ev, RECIPE_DECL_SIGNED_IMAGES),
                        "the recipe does not enforce secure boot, so image signatures are not "
                        "checked by the device");
        decide_measured(ev, I_ROLLBACK, ev->recipe_has_rollback_fuse,
                        declared(ev, RECIPE_DECL_ROLLBACK_PROTECTION),
                        "declared by the maker; the recipe programs no anti-rollback fuse the "
                        "station could verify");
        decide_declared(ev, I_RECOVERY, declared(ev, RECIPE_DECL_RECOVERY_PARTITION), NULL);
        decide_measured(ev, I_SECURE_BOOT, ev->recipe_enforces_secure_boot, -1,
                        "the recipe does not enforce secure boot");
        if (!ev->recipe_enforces_secure_boot)
                ev->item[I_SECURE_BOOT].state = ST_NOT_MET;
        decide_measured(ev, I_DEBUG_DISABLED, ev->recipe_closes_debug, -1,
                        "the recipe does not disable the debug port");
        if (!ev->recipe_closes_debug)
                ev->item[I_DEBUG_DISABLED].state = ST_NOT_MET;
        decide_measured(ev, I_TRUSTED_KEYS, 1, -1, "");
        decide_measured(ev, I_DEFAULT_PASSWORDS, ev->recipe_passwords > 0, -1,
                        "the recipe writes no per-device credential: the station cannot evidence "
                        "the absence of a default password");
        if (ev->recipe_passwords == 0)
                ev->item[I_DEFAULT_PASSWORDS].state = ST_NOT_EVIDENCED;
        else if (ev->item[I_DEFAULT_PASSWORDS].state == ST_VERIFIED && ev->shared_creds > 0) {
                ev->item[I_DEFAULT_PASSWORDS].state = ST_NOT_MET;
                snprintf(ev->item[I_DEFAULT_PASSWORDS].note,
                         sizeof(ev->item[I_DEFAULT_PASSWORDS].note),
                         "%u credential commitments are shared by several units",
                         ev->shared_creds);
        }
        decide_measured(ev, I_API_AUTH, ev->recipe_certs > 0,
                        declared(ev, RECIPE_DECL_API_AUTHENTICATION),
                        "declared by the maker; the recipe issues no device certificate the "
                        "station could evidence");
        decide_measured(ev, I_LOCAL_IF, ev->recipe_closes_debug,
                        declared(ev, RECIPE_DECL_LOCAL_INTERFACES_PROTECTED),
                        "declared by the maker; the recipe does not disable the debug port");
        snprintf(buf, sizeof(buf), ": %s", p->vulnerability_disclosure_url);
        decide_declared(ev, I_DISCLOSURE, p->vulnerability_disclosure_url != NULL, buf);
        snprintf(buf, sizeof(buf), "%s%s", p->update_policy_url ? ": " : "",
                 p->update_policy_url ? p->update_policy_url : "");
        decide_declared(ev, I_UPDATE_POLICY, declared(ev, RECIPE_DECL_UPDATE_POLICY_DEFINED), buf);
        snprintf(buf, sizeof(buf), ": SBOM %s", p->sbom_ref ? p->sbom_ref : "-");
        decide_declared(ev, I_INVENTORY,
                        declared(ev, RECIPE_DECL_COMPONENT_INVENTORY_AVAILABLE) &&
                                p->sbom_ref != NULL,
                        buf);
        decide_declared(ev, I_SEC_FEATURES_DOC,
                        declared(ev, RECIPE_DECL_SECURITY_FEATURES_DOCUMENTED), NULL);
        snprintf(buf, sizeof(buf), ": support ends %04u-%02u-%02u", p->support_end.year,
                 p->support_end.month, p->support_end.day);
        decide_declared(ev, I_LIFECYCLE_SUPPORT, p->support_end.year > 0, buf);
        gmtime_r(&now, &tm);
        if (p->support_end.year > 0 &&
            (unsigned)(tm.tm_year + 1900) * 10000u + (unsigned)(tm.tm_mon + 1) * 100u +
                            (unsigned)tm.tm_mday >
                    p->support_end.year * 10000u + p->support_end.month * 100u +
                            p->support_end.day) {
                ev->item[I_LIFECYCLE_SUPPORT].state = ST_NOT_MET;
                snprintf(ev->item[I_LIFECYCLE_SUPPORT].note,
                         sizeof(ev->item[I_LIFECYCLE_SUPPORT].note),
                         "the declared support period ended on %04u-%02u-%02u",
                         p->support_end.year, p->support_end.month, p->support_end.day);
        }
        snprintf(buf, sizeof(buf), "%s%s", p->security_info_url ? ": " : "",
                 p->security_info_url ? p->security_info_url : "");
        decide_declared(ev, I_CUSTOMER_INFO,
                        declared(ev, RECIPE_DECL_CUSTOMER_SECURITY_INFORMATION_AVAILABLE), buf);
}

static const char *state_name(enum item_state s)
{
        static const char *const n[] = {"verified", "not_met", "declared", "not_evidenced"};
        return n[s];
}

static void render_json(const struct evidence *ev, struct kiln_buf *out)
{
        struct json_w w;
        char now[32];
        const char *cat = NULL;

        if (kiln_utc_iso8601(kiln_wall_ms(), now, sizeof(now)) < 0)
                now[0] = '\0';
        json_init(&w, out);
        json_obj_begin(&w);
        json_kv_int(&w, "kiln_evidence_pack", 1);
        json_kv_str(&w, "generated_at", now);
        json_kv_str(&w, "work_order", ev->wo.id);
        json_kv_str(&w, "lot", ev->wo.lot);
        json_key(&w, "recipe");
        json_obj_begin(&w);
        json_kv_str(&w, "id", ev->rc->id);
        json_kv_str(&w, "version", ev->rc->version);
        json_kv_str(&w, "sha256", ev->rc->sha256_hex);
        json_obj_end(&w);
        json_key(&w, "product");
        json_obj_begin(&w);
        json_kv_str(&w, "id", ev->rc->product.id);
        json_kv_str(&w, "name", ev->rc->product.name);
        json_kv_str(&w, "model", ev->rc->product.model);
        json_kv_str(&w, "manufacturer", ev->rc->product.manufacturer);
        json_obj_end(&w);
        json_key(&w, "period");
        json_obj_begin(&w);
        json_kv_str(&w, "first_started_at", ev->first_started[0] ? ev->first_started : NULL);
        json_kv_str(&w, "last_finished_at", ev->last_finished[0] ? ev->last_finished : NULL);
        json_obj_end(&w);
        json_key(&w, "units");
        json_obj_begin(&w);
        json_kv_int(&w, "total", ev->total);
        json_kv_int(&w, "pass", ev->pass);
        json_kv_int(&w, "fail", ev->fail);
        json_kv_int(&w, "lock_failed", ev->lock_failed);
        json_kv_int(&w, "scrap", ev->scrap);
        json_kv_int(&w, "in_progress", ev->in_progress);
        json_obj_end(&w);
        json_key(&w, "records_integrity");
        json_obj_begin(&w);
        json_kv_bool(&w, "audit_ok", ev->audit.ok);
        json_kv_str(&w, "audit_problem", ev->audit.ok ? NULL : ev->audit.problem);
        json_kv_str(&w, "chain_head", ev->audit.head);
        json_kv_int(&w, "signed_checkpoints", (int64_t)ev->audit.checkpoints);
        json_obj_end(&w);
        json_key(&w, "checklist");
        json_obj_begin(&w);
        for (unsigned i = 0; i < I_MAX; i++) {
                const struct item_result *it = &ev->item[i];

                if (cat == NULL || strcmp(cat, items[i].category) != 0) {
                        if (cat != NULL)
                                json_obj_end(&w);
                        json_key(&w, items[i].category);
                        json_obj_begin(&w);
                        cat = items[i].category;
                }
                json_key(&w, items[i].id);
                json_obj_begin(&w);
                json_key(&w, "value");
                if (it->state == ST_VERIFIED)
                        json_bool(&w, 1);
                else if (it->state == ST_NOT_MET)
                        json_bool(&w, 0);
                else
                        json_null(&w);
                json_kv_str(&w, "status", state_name(it->state));
                json_kv_str(&w, "title", items[i].title);
                json_kv_bool(&w, "measured_by_station", it->measured);
                json_key(&w, "declared");
                if (it->declared < 0)
                        json_null(&w);
                else
                        json_bool(&w, it->declared);
                json_key(&w, "evidence");
                json_obj_begin(&w);
                json_kv_int(&w, "pass_units", ev->pass);
                json_kv_int(&w, "verified_units", it->measured ? it->verified : 0);
                json_kv_int(&w, "exceptions_count", it->measured ? it->n_exc : 0);
                json_key(&w, "exceptions");
                json_arr_begin(&w);
                for (unsigned k = 0; it->measured && k < it->n_exc && k < EXCEPTIONS_MAX; k++)
                        json_str(&w, it->exc[k]);
                json_arr_end(&w);
                json_kv_str(&w, "note", it->note);
                json_obj_end(&w);
                json_key(&w, "clauses");
                json_obj_begin(&w);
                json_kv_str(&w, "etsi_en_303_645", items[i].etsi);
                json_kv_str(&w, "en_18031_1", items[i].en18031);
                json_kv_str(&w, "cra_annex_i", items[i].cra);
                json_kv_str(&w, "cyber_trust_mark", items[i].ctm);
                json_obj_end(&w);
                json_obj_end(&w);
        }
        json_obj_end(&w);
        json_obj_end(&w);
        json_key(&w, "units_not_passed");
        json_arr_begin(&w);
        for (unsigned i = 0; i < ev->n_np; i++) {
                json_obj_begin(&w);
                json_kv_str(&w, "serial", ev->np[i].serial);
                json_kv_str(&w, "verdict", ev->np[i].verdict);
                json_kv_str(&w, "code", ev->np[i].code[0] ? ev->np[i].code : NULL);
                json_kv_str(&w, "reason", ev->np[i].reason[0] ? ev->np[i].reason : NULL);
                json_obj_end(&w);
        }
        json_arr_end(&w);
        json_kv_int(&w, "units_not_passed_total", ev->n_np_total);
        json_obj_end(&w);
        kiln_buf_put_u8(out, '\n');
}

/* Markdown table cells must not break the table. */
static void md_cell(struct kiln_buf *out, const char *s)
{
        for (; *s; s++) {
                if (*s == '|')
                        kiln_buf_put_str(out, "\\|");
                else if (*s == '\n' || *s == '\r')
                        kiln_buf_put_u8(out, ' ');
                else
                        kiln_buf_put_u8(out, (uint8_t)*s);
        }
}

static void render_md(const struct evidence *ev, struct kiln_buf *out)
{
        static const char *const mark[] = {"✅ verified", "❌ not met", "ⓘ declared only",
                                           "— not evidenced"};
        char now[32];
        const char *cat = NULL;

        if (kiln_utc_iso8601(kiln_wall_ms(), now, sizeof(now)) < 0)
                now[0] = '\0';
        kiln_buf_printf(out, "# Compliance evidence pack — work order %s\n\n", ev->wo.id);
        kiln_buf_printf(out, "| | |\n|---|---|\n");
        kiln_buf_printf(out, "| Product | %s %s (%s), %s |\n", ev->rc->product.name,
                        ev->rc->product.model, ev->rc->product.id, ev->rc->product.manufacturer);
        kiln_buf_printf(out, "| Lot | %s |\n", ev->wo.lot);
        kiln_buf_printf(out, "| Recipe | %s version %s, SHA-256 `%s` |\n", ev->rc->id,
                        ev->rc->version, ev->rc->sha256_hex);
        kiln_buf_printf(out, "| Produced | %s to %s |\n",
                        ev->first_started[0] ? ev->first_started : "-",
                        ev->last_finished[0] ? ev->last_finished : "-");
        kiln_buf_printf(out, "| Units | %u: %u PASS, %u FAIL, %u LOCK_FAILED, %u SCRAP, %u in "
                             "progress |\n",
                        ev->total, ev->pass, ev->fail, ev->lock_failed, ev->scrap,
                        ev->in_progress);
        kiln_buf_printf(out, "| Records | %s%s (chain head `%.16s…`, %llu signed checkpoints) |\n",
                        ev->audit.ok ? "audit trail intact" : "AUDIT TRAIL BROKEN: ",
                        ev->audit.ok ? "" : ev->audit.problem, ev->audit.head,
                        (unsigned long long)ev->audit.checkpoints);
        kiln_buf_printf(out, "| Generated | %s by kiln evidence |\n\n", now);
        kiln_buf_printf(out,
                        "An item is **verified** only when the station measured it on every unit "
                        "that passed. Items the station cannot measure show the maker's "
                        "declaration from the recipe and are not claimed as verified. Units that "
                        "did not pass were not shipped and are listed at the end.\n");
        for (unsigned i = 0; i < I_MAX; i++) {
                const struct item_result *it = &ev->item[i];

                if (cat == NULL || strcmp(cat, items[i].category) != 0) {
                        cat = items[i].category;
                        kiln_buf_printf(out, "\n## %s\n\n", cat);
                        kiln_buf_printf(out, "| item | status | evidence | ETSI EN 303 645 | "
                                             "EN 18031-1 | CRA Annex I | Cyber Trust Mark |\n"
                                             "|---|---|---|---|---|---|---|\n");
                }
                kiln_buf_printf(out, "| **%s**<br>%s | %s | ", items[i].id, items[i].title,
                                mark[it->state]);
                md_cell(out, it->note);
                if (it->measured && it->n_exc > 0) {
                        kiln_buf_put_str(out, "; exceptions: ");
                        for (unsigned k = 0; k < it->n_exc && k < EXCEPTIONS_MAX; k++) {
                                kiln_buf_put_str(out, k ? ", " : "");
                                md_cell(out, it->exc[k]);
                        }
                        if (it->n_exc > EXCEPTIONS_MAX)
                                kiln_buf_printf(out, " and %u more", it->n_exc - EXCEPTIONS_MAX);
                }
                kiln_buf_printf(out, " | %s | %s | %s | %s |\n", items[i].etsi, items[i].en18031,
                                items[i].cra, items[i].ctm);
        }
        kiln_buf_printf(out, "\n## Units that did not pass\n\n");
        if (ev->n_np_total == 0) {
                kiln_buf_printf(out, "None.\n");
        } else {
                kiln_buf_printf(out, "| serial | verdict | code | reason |\n|---|---|---|---|\n");
                for (unsigned i = 0; i < ev->n_np; i++) {
                        kiln_buf_printf(out, "| %s | %s | %s | ", ev->np[i].serial,
                                        ev->np[i].verdict, ev->np[i].code[0] ? ev->np[i].code : "-");
                        md_cell(out, ev->np[i].reason[0] ? ev->np[i].reason : "-");
                        kiln_buf_put_str(out, " |\n");
                }
                if (ev->n_np_total > ev->n_np)
                        kiln_buf_printf(out, "\n…and %u more (see `kiln export --verdict`).\n",
                                        ev->n_np_total - ev->n_np);
        }
        kiln_buf_printf(out, "\n## How to check this pack\n\n"
                             "- `kiln audit verify --db STATION.db --audit-key audit-pub.pem` "
                             "re-checks the records it rests on.\n"
                             "- `kiln trace SERIAL --db STATION.db` shows any unit's full "
                             "history.\n"
                             "- `kiln export --work-order %s --manifest …` exports the lot's "
                             "records with a signed manifest.\n",
                        ev->wo.id);
}

int evidence_build(struct db *db, const char *work_order, enum evidence_format fmt,
                   struct kiln_buf *out)
{
        struct evidence *ev = kiln_calloc(1, sizeof(*ev));
        struct yaml_doc_diags diags;
        struct recipe *rc = NULL;
        struct db_export_filter flt = {.verdict = -1};
        uint8_t *body = NULL;
        size_t len = 0;
        int r;

        yaml_doc_diags_init(&diags);
        if (ev == NULL)
                return KILN_E_NOMEM;
        ev->np = kiln_calloc(NOT_PASSED_MAX, sizeof(*ev->np));
        if (ev->np == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        export_rec_init(&ev->rec);
        ev->db = db;
        r = db_work_order_get(db, work_order, &ev->wo);
        if (r == KILN_OK)
                r = db_recipe_get(db, ev->wo.recipe_sha256, &body, &len);
        if (r == KILN_OK)
                r = recipe_load_mem("<recorded recipe>", NULL, body, len, RECIPE_LOAD_NO_FILES,
                                    &diags, &rc);
        if (r < 0)
                goto out;
        ev->rc = rc;
        for (unsigned i = 0; i < rc->n_fuses; i++) {
                ev->recipe_enforces_secure_boot |= rc->fuses[i].verify == RECIPE_VERIFY_SECURE_BOOT;
                ev->recipe_closes_debug |= rc->fuses[i].verify == RECIPE_VERIFY_DEBUG_CLOSED;
                ev->recipe_has_rollback_fuse |= strncmp(rc->fuses[i].field, "rollback", 8) == 0;
        }
        for (unsigned i = 0; i < rc->n_creds; i++)
                ev->recipe_passwords += rc->creds[i].kind == RECIPE_CRED_PASSWORD;
        for (unsigned i = 0; i < rc->n_keys; i++) {
                ev->recipe_certs += rc->keys[i].has_cert != 0;
                ev->recipe_attest += rc->keys[i].attest != 0;
        }
        flt.work_order = work_order;
        r = db_export_each(db, &flt, visit_unit, ev);
        if (r == KILN_OK)
                r = db_work_order_shared_creds(db, work_order, &ev->shared_creds);
        if (r == KILN_OK)
                r = audit_verify(db, NULL, &ev->audit);
        if (r < 0)
                goto out;
        decide(ev);
        if (fmt == EVIDENCE_JSON)
                render_json(ev, out);
        else
                render_md(ev, out);
        r = kiln_buf_error(out);
out:
        recipe_free(rc);
        yaml_doc_diags_free(&diags);
        kiln_free(body);
        if (ev != NULL) {
                export_rec_free(&ev->rec);
                kiln_free(ev->np);
                kiln_free(ev);
        }
        return r;
}
