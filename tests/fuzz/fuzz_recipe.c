/*
 * Fuzz target: arbitrary bytes as a recipe, loaded from memory without reading referenced files.
 * When a recipe loads, every template is rendered with values at their limits (the longest
 * station id, the largest chip UID, the last serial of the pool) and the promise of recipe.h is
 * checked: a rendering never exceeds its template's max_len, so a max_len + 1 buffer always
 * suffices. Problems must be reported, never crash, leak or read out of bounds.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/recipe.h"
#include "kiln/yaml_doc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void render_one(const struct recipe_tmpl *t, const struct recipe_values *v)
{
        static char out[KILN_RECIPE_RENDER_MAX + 1];
        size_t len = 0;

        if (t->src == NULL)
                return;
        /* valid values must render, into exactly max_len + 1 bytes */
        if (t->max_len + 1 > sizeof(out) ||
            recipe_tmpl_render(t, v, out, t->max_len + 1, &len) != KILN_OK || len > t->max_len)
                abort();
}

static void render_all(const struct recipe *r)
{
        static const char station[] = "station-with-the-longest-id-0123"; /* 32 characters */
        char serial[KILN_SERIAL_MAX + 1];
        uint8_t uid[KILN_UID_MAX];
        uint64_t macs[KILN_MACS_PER_UNIT_MAX];
        uint8_t fuse[KILN_FUSE_BYTES_MAX];
        struct recipe_values v;
        size_t len;

        memset(&v, 0, sizeof(v));
        memset(uid, 0xa5, sizeof(uid));
        for (unsigned i = 0; i < KILN_MACS_PER_UNIT_MAX; i++)
                macs[i] = r->mac.enabled ? r->mac.last : UINT64_C(0x0200000000ff);
        v.station = station;
        v.chip_uid = uid;
        v.chip_uid_len = sizeof(uid);
        v.macs = macs;
        v.n_macs = r->mac.enabled ? r->mac.per_unit : 0;
        v.time_ms = INT64_C(253402214400000); /* 9999-12-31 */
        if (recipe_serial_render(r, r->serial.last, &v, serial, r->serial.max_len + 1) != KILN_OK ||
            strlen(serial) > r->serial.max_len || r->serial.max_len > KILN_SERIAL_MAX)
                abort();
        if (recipe_serial_render(r, r->serial.start, &v, serial, sizeof(serial)) != KILN_OK)
                abort();
        v.serial = serial;
        for (unsigned k = 0; k < r->n_keys; k++) {
                const struct recipe_cert *c = &r->keys[k].cert;

                if (!r->keys[k].has_cert)
                        continue;
                for (unsigned i = 0; i < c->n_subject; i++)
                        render_one(&c->subject[i].value, &v);
                for (unsigned i = 0; i < c->n_san; i++)
                        if (c->san[i].type != RECIPE_SAN_IP)
                                render_one(&c->san[i].value, &v);
                for (unsigned i = 0; i < c->n_ext; i++)
                        if (!c->ext[i].is_der)
                                render_one(&c->ext[i].utf8, &v);
        }
        for (unsigned i = 0; i < r->n_objects; i++)
                if (!r->objects[i].from_file)
                        render_one(&r->objects[i].content, &v);
        for (unsigned i = 0; i < r->label.n_fields; i++)
                render_one(&r->label.fields[i], &v);
        if (r->label.has_qr)
                render_one(&r->label.qr, &v);
        for (unsigned i = 0; i < r->n_fuses; i++)
                if (recipe_fuse_value(&r->fuses[i], &v, fuse, &len) != KILN_OK ||
                    len != r->fuses[i].value_len)
                        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct yaml_doc_diags d;
        struct recipe *r = NULL;
        int rc;

        yaml_doc_diags_init(&d);
        rc = recipe_load_mem("fuzz.yaml", NULL, data, size, RECIPE_LOAD_NO_FILES, &d, &r);
        /* a recipe comes back exactly when no problem was reported */
        if ((rc == KILN_OK) != (r != NULL) || (rc == KILN_OK && yaml_doc_diags_count(&d) != 0) ||
            (rc == KILN_E_RECIPE && yaml_doc_diags_count(&d) == 0))
                abort();
        if (r != NULL)
                render_all(r);
        yaml_doc_diags_sort(&d);
        for (size_t i = 0; i < d.n; i++)
                if (d.v[i].line == 0 || d.v[i].column == 0 || d.v[i].msg[0] == '\0')
                        abort();
        recipe_free(r);
        yaml_doc_diags_free(&d);
        return 0;
}
