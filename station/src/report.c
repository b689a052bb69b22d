/* Operator progress and the JSON event stream. */
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "kiln/buf.h"
#include "kiln/json.h"
#include "kiln/report.h"
#include "kiln/util.h"

#define SLOT_LINE_MAX 160

struct report {
        enum report_mode mode;
        FILE *out;
        unsigned n_slots;
        pthread_mutex_t lock;
        pthread_t ticker;
        int ticker_running;
        int stop;
        unsigned drawn;     /* status lines currently on screen (TTY) */
        char (*slot_line)[SLOT_LINE_MAX];
        uint64_t *slot_since; /* monotonic ms when the activity began */
        struct kiln_buf json;
};

/* ---- TTY status block ---- */

static void tty_erase(struct report *r)
{
        if (r->drawn > 0)
                fprintf(r->out, "\033[%uA\033[J", r->drawn);
        r->drawn = 0;
}

static void tty_draw(struct report *r)
{
        uint64_t now = kiln_now_ms();

        for (unsigned i = 0; i < r->n_slots; i++) {
                double secs = r->slot_since[i] ? (double)(now - r->slot_since[i]) / 1000.0 : 0.0;

                if (r->slot_line[i][0] != '\0')
                        fprintf(r->out, "\033[2K  %s  %5.1fs\n", r->slot_line[i], secs);
                else
                        fprintf(r->out, "\033[2K  slot %u  idle\n", i + 1);
        }
        r->drawn = r->n_slots;
        fflush(r->out);
}

static void *ticker_main(void *p)
{
        struct report *r = p;

        for (;;) {
                pthread_mutex_lock(&r->lock);
                if (r->stop) {
                        pthread_mutex_unlock(&r->lock);
                        break;
                }
                tty_erase(r);
                tty_draw(r);
                pthread_mutex_unlock(&r->lock);
                kiln_sleep_ms(250);
        }
        return NULL;
}

/* Print one permanent line (above the status block on a TTY). Caller holds the lock. */
static void emit_line(struct report *r, const char *line)
{
        if (r->mode == REPORT_TTY) {
                tty_erase(r);
                fprintf(r->out, "%s\n", line);
                tty_draw(r);
        } else {
                fprintf(r->out, "%s\n", line);
                fflush(r->out);
        }
}

static void emit_json(struct report *r)
{
        kiln_buf_put_u8(&r->json, '\n');
        if (kiln_buf_error(&r->json) == KILN_OK)
                fwrite(r->json.data, 1, r->json.len, r->out);
        fflush(r->out);
        kiln_buf_clear(&r->json);
}

static void json_head(struct report *r, struct json_w *w, const char *event)
{
        char ts[32];

        kiln_buf_clear(&r->json);
        json_init(w, &r->json);
        json_obj_begin(w);
        if (kiln_utc_iso8601(kiln_wall_ms(), ts, sizeof(ts)) < 0)
                ts[0] = '\0';
        json_kv_str(w, "event", event);
        json_kv_str(w, "time", ts);
}

int report_new(enum report_mode mode, FILE *out, unsigned n_slots, struct report **ret)
{
        struct report *r = kiln_calloc(1, sizeof(*r));

        if (r == NULL)
                return KILN_E_NOMEM;
        r->mode = mode;
        r->out = out;
        r->n_slots = n_slots;
        pthread_mutex_init(&r->lock, NULL);
        kiln_buf_init(&r->json, 1u << 20);
        r->slot_line = kiln_calloc(n_slots ? n_slots : 1, sizeof(*r->slot_line));
        r->slot_since = kiln_calloc(n_slots ? n_slots : 1, sizeof(*r->slot_since));
        if (r->slot_line == NULL || r->slot_since == NULL) {
                report_free(r);
                return KILN_E_NOMEM;
        }
        if (mode == REPORT_TTY) {
                if (pthread_create(&r->ticker, NULL, ticker_main, r) == 0)
                        r->ticker_running = 1;
                else
                        r->mode = REPORT_LINES;
        }
        *ret = r;
        return KILN_OK;
}

void report_free(struct report *r)
{
        if (r == NULL)
                return;
        if (r->ticker_running) {
                pthread_mutex_lock(&r->lock);
                r->stop = 1;
                pthread_mutex_unlock(&r->lock);
                pthread_join(r->ticker, NULL);
                pthread_mutex_lock(&r->lock);
                tty_erase(r);
                fflush(r->out);
                pthread_mutex_unlock(&r->lock);
        }
        kiln_buf_free(&r->json);
        kiln_free(r->slot_line);
        kiln_free(r->slot_since);
        pthread_mutex_destroy(&r->lock);
        kiln_free(r);
}

void report_run_start(struct report *r, const char *station_id, const char *work_order,
                      const char *operator_id, const char *recipe_id, int development)
{
        char line[512];
        struct json_w w;

        pthread_mutex_lock(&r->lock);
        if (r->mode == REPORT_JSON) {
                json_head(r, &w, "run_start");
                json_kv_str(&w, "station_id", station_id);
                json_kv_str(&w, "work_order", work_order);
                json_kv_str(&w, "operator", operator_id);
                json_kv_str(&w, "recipe", recipe_id);
                json_kv_int(&w, "slots", r->n_slots);
                json_kv_bool(&w, "development", development);
                json_obj_end(&w);
                emit_json(r);
        } else {
                if (development)
                        emit_line(r, "*** NON-PRODUCTION STATION (development mode): records are "
                                     "marked development ***");
                snprintf(line, sizeof(line),
                         "station %s  work order %s  operator %s  recipe %s  slots %u", station_id,
                         work_order, operator_id, recipe_id, r->n_slots);
                emit_line(r, line);
        }
        pthread_mutex_unlock(&r->lock);
}

void report_slot(struct report *r, unsigned slot_index, const char *slot, const char *serial,
                 const char *activity)
{
        if (slot_index >= r->n_slots)
                return;
        pthread_mutex_lock(&r->lock);
        if (activity == NULL) {
                r->slot_line[slot_index][0] = '\0';
                r->slot_since[slot_index] = 0;
        } else {
                if (r->slot_since[slot_index] == 0 || strcmp(activity, "connecting") == 0)
                        r->slot_since[slot_index] = kiln_now_ms();
                snprintf(r->slot_line[slot_index], SLOT_LINE_MAX, "slot %-4s %-20s %s", slot,
                         serial ? serial : "-", activity);
        }
        pthread_mutex_unlock(&r->lock);
}

void report_step(struct report *r, const char *slot, const char *serial, const char *step, int ok,
                 double ms, enum failcode code, const char *detail)
{
        struct json_w w;

        if (r->mode != REPORT_JSON)
                return; /* the status line shows steps; failures come with the unit line */
        pthread_mutex_lock(&r->lock);
        json_head(r, &w, "step");
        json_kv_str(&w, "slot", slot);
        json_kv_str(&w, "serial", serial);
        json_kv_str(&w, "step", step);
        json_kv_bool(&w, "ok", ok);
        json_key(&w, "ms");
        json_uint(&w, (uint64_t)(ms + 0.5));
        if (!ok) {
                json_kv_str(&w, "code", failcode_name(code));
                json_kv_str(&w, "detail", detail);
        }
        json_obj_end(&w);
        emit_json(r);
        pthread_mutex_unlock(&r->lock);
}

void report_unit(struct report *r, const struct report_unit *u)
{
        char line[1024];
        struct json_w w;

        pthread_mutex_lock(&r->lock);
        if (r->mode == REPORT_JSON) {
                json_head(r, &w, "unit");
                json_kv_str(&w, "slot", u->slot);
                json_kv_str(&w, "serial", u->serial);
                json_kv_str(&w, "chip_uid", u->chip_uid);
                json_kv_str(&w, "mac", u->mac);
                json_kv_str(&w, "verdict", u->verdict);
                json_kv_str(&w, "code", u->code == FC_NONE ? NULL : failcode_name(u->code));
                json_kv_str(&w, "reason", u->reason);
                json_kv_str(&w, "action", u->code == FC_NONE ? NULL : failcode_action(u->code));
                json_key(&w, "seconds");
                json_uint(&w, (uint64_t)(u->seconds * 1000.0 + 0.5));
                json_kv_int(&w, "attempt", u->attempt);
                json_kv_bool(&w, "resumed", u->resumed);
                json_obj_end(&w);
                emit_json(r);
        } else if (u->code == FC_NONE) {
                snprintf(line, sizeof(line), "slot %-4s %-20s %-6s %6.2fs  uid %s%s%s",
                         u->slot, u->serial ? u->serial : "-", u->verdict, u->seconds,
                         u->chip_uid ? u->chip_uid : "-", u->mac ? "  mac " : "",
                         u->mac ? u->mac : "");
                emit_line(r, line);
        } else {
                snprintf(line, sizeof(line), "slot %-4s %-20s %-6s %6.2fs  %s: %s — %s", u->slot,
                         u->serial ? u->serial : "-", u->verdict, u->seconds,
                         failcode_name(u->code), u->reason ? u->reason : "",
                         failcode_action(u->code));
                emit_line(r, line);
        }
        pthread_mutex_unlock(&r->lock);
}

void report_alert(struct report *r, const char *slot, const char *kind, const char *text)
{
        char line[1024];
        struct json_w w;

        pthread_mutex_lock(&r->lock);
        if (r->mode == REPORT_JSON) {
                json_head(r, &w, "alert");
                json_kv_str(&w, "slot", slot);
                json_kv_str(&w, "kind", kind);
                json_kv_str(&w, "text", text);
                json_obj_end(&w);
                emit_json(r);
        } else {
                if (slot != NULL)
                        snprintf(line, sizeof(line), "!! slot %s: %s", slot, text);
                else
                        snprintf(line, sizeof(line), "!! %s", text);
                emit_line(r, line);
        }
        pthread_mutex_unlock(&r->lock);
}

void report_note(struct report *r, const char *kind, const char *text)
{
        struct json_w w;

        pthread_mutex_lock(&r->lock);
        if (r->mode == REPORT_JSON) {
                json_head(r, &w, "note");
                json_kv_str(&w, "kind", kind);
                json_kv_str(&w, "text", text);
                json_obj_end(&w);
                emit_json(r);
        } else {
                emit_line(r, text);
        }
        pthread_mutex_unlock(&r->lock);
}

void report_run_end(struct report *r, const struct report_summary *s)
{
        char line[512];
        struct json_w w;
        unsigned total = s->pass + s->fail + s->lock_failed + s->scrap + s->unrecorded;

        pthread_mutex_lock(&r->lock);
        if (r->mode == REPORT_JSON) {
                json_head(r, &w, "run_end");
                json_kv_int(&w, "units", total);
                json_kv_int(&w, "pass", s->pass);
                json_kv_int(&w, "fail", s->fail);
                json_kv_int(&w, "lock_failed", s->lock_failed);
                json_kv_int(&w, "scrap", s->scrap);
                json_kv_int(&w, "unrecorded", s->unrecorded);
                json_key(&w, "seconds");
                json_uint(&w, (uint64_t)(s->seconds + 0.5));
                json_key(&w, "quota_left");
                if (s->quota_left < 0)
                        json_null(&w);
                else
                        json_int(&w, s->quota_left);
                json_obj_end(&w);
                emit_json(r);
        } else {
                snprintf(line, sizeof(line),
                         "%u units: %u PASS, %u FAIL, %u LOCK_FAILED, %u SCRAP in %.1f s", total,
                         s->pass, s->fail, s->lock_failed, s->scrap, s->seconds);
                emit_line(r, line);
                if (s->unrecorded > 0) {
                        snprintf(line, sizeof(line),
                                 "%u units have no recorded verdict (the database failed): they "
                                 "stay in progress and are taken back when run again",
                                 s->unrecorded);
                        emit_line(r, line);
                }
                if (s->quota_left >= 0) {
                        snprintf(line, sizeof(line), "work order quota left: %lld",
                                 (long long)s->quota_left);
                        emit_line(r, line);
                }
        }
        pthread_mutex_unlock(&r->lock);
}
