/* Slot threads. */
#include <pthread.h>
#include <string.h>

#include "kiln/error.h"
#include "kiln/log.h"
#include "kiln/run.h"
#include "kiln/util.h"

struct run_state {
        struct engine *e;
        const struct run_opts *o;
        pthread_mutex_t lock;
        uint64_t started;
        volatile int enough; /* max_units started: waiting slots may give up */
        int halted;          /* a station-level failure: start no new unit */
        int first_error;
        struct report_summary sum;
};

struct slot_arg {
        struct run_state *rs;
        unsigned index;
};

/* Codes after which no further unit can succeed on this station. */
static int station_fatal(enum failcode fc)
{
        return fc == FC_DB || fc == FC_DISK_FULL || fc == FC_HSM || fc == FC_QUOTA ||
               fc == FC_POOL || fc == FC_CERT;
}

static int claim_unit(struct run_state *rs)
{
        int ok;

        pthread_mutex_lock(&rs->lock);
        ok = !rs->halted && !(rs->e->stop != NULL && *rs->e->stop) &&
             (rs->o->max_units == 0 || rs->started < rs->o->max_units);
        if (ok)
                rs->started++;
        if (rs->o->max_units != 0 && rs->started >= rs->o->max_units)
                rs->enough = 1;
        pthread_mutex_unlock(&rs->lock);
        return ok;
}

static int run_over(struct run_state *rs)
{
        int over;

        pthread_mutex_lock(&rs->lock);
        over = rs->halted || rs->enough || (rs->e->stop != NULL && *rs->e->stop);
        pthread_mutex_unlock(&rs->lock);
        return over;
}

static void *slot_main(void *p)
{
        struct slot_arg *a = p;
        struct run_state *rs = a->rs;
        const struct run_opts *o = rs->o;
        const char *name = o->slot_names[a->index];
        char port[KILN_PORT_SPEC_MAX + 1];

        while (!run_over(rs)) {
                struct unit_result res;
                struct report_unit ru;
                int r;

                /* wait for a device first, then take a unit of the budget: an empty slot must
                 * not hold the budget while another slot has a device waiting */
                kiln_err_reset();
                r = o->fx->next(o->fx_ctx, a->index, &rs->enough, port, sizeof(port));
                if (r < 0) {
                        if (r != KILN_E_NOT_FOUND && r != KILN_E_CANCELLED)
                                report_alert(rs->e->report, name, "fixture",
                                             kiln_err_detail()[0] ? kiln_err_detail()
                                                                  : kiln_strerror(r));
                        break;
                }
                if (!claim_unit(rs)) {
                        if (o->fx->done != NULL)
                                o->fx->done(o->fx_ctx, a->index, NULL);
                        break;
                }
                r = engine_unit_run(rs->e, name, a->index, port, &res);
                memset(&ru, 0, sizeof(ru));
                ru.slot = name;
                ru.serial = res.serial[0] ? res.serial : NULL;
                ru.chip_uid = res.chip_uid[0] ? res.chip_uid : NULL;
                ru.mac = res.mac[0] ? res.mac : NULL;
                ru.verdict = db_verdict_name(res.verdict);
                ru.code = res.code;
                ru.reason = res.reason;
                ru.seconds = res.seconds;
                ru.attempt = res.attempt;
                ru.resumed = res.resumed;
                report_unit(rs->e->report, &ru);
                if (o->fx->done != NULL)
                        o->fx->done(o->fx_ctx, a->index, &res);
                pthread_mutex_lock(&rs->lock);
                switch (res.verdict) {
                case DB_VERDICT_PASS:
                        rs->sum.pass++;
                        break;
                case DB_VERDICT_LOCK_FAILED:
                        rs->sum.lock_failed++;
                        break;
                case DB_VERDICT_SCRAP:
                        rs->sum.scrap++;
                        break;
                case DB_VERDICT_IN_PROGRESS:
                        rs->sum.unrecorded++;
                        break;
                default:
                        rs->sum.fail++;
                }
                if (o->on_unit != NULL)
                        o->on_unit(o->on_unit_ctx, &res);
                if (r < 0 || station_fatal(res.code)) {
                        if (!rs->halted)
                                report_alert(rs->e->report, name, "station",
                                             "the station stops starting new units: fix the "
                                             "cause above, then run again");
                        rs->halted = 1;
                        if (rs->first_error == KILN_OK)
                                rs->first_error = r < 0 ? r : KILN_E_PERM;
                }
                pthread_mutex_unlock(&rs->lock);
        }
        report_slot(rs->e->report, a->index, name, NULL, NULL);
        return NULL;
}

int station_run(struct engine *e, const struct run_opts *o, struct report_summary *ret)
{
        struct run_state rs;
        struct slot_arg args[KILN_SLOTS_MAX];
        pthread_t th[KILN_SLOTS_MAX];
        unsigned started = 0;
        uint64_t t0 = kiln_now_ms();
        pthread_attr_t attr;
        int r = KILN_OK;

        if (o->n_slots == 0 || o->n_slots > KILN_SLOTS_MAX)
                return kiln_fail(KILN_E_RANGE, "1..%u slots", KILN_SLOTS_MAX);
        memset(&rs, 0, sizeof(rs));
        rs.e = e;
        rs.o = o;
        pthread_mutex_init(&rs.lock, NULL);
        /* small stacks: 16 slots must fit the station's memory budget */
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 512u << 10);
        for (unsigned i = 0; i < o->n_slots; i++) {
                args[i].rs = &rs;
                args[i].index = i;
                if (pthread_create(&th[i], &attr, slot_main, &args[i]) != 0) {
                        r = kiln_fail(KILN_E_INTERNAL, "cannot start slot thread %u", i + 1);
                        pthread_mutex_lock(&rs.lock);
                        rs.halted = 1;
                        pthread_mutex_unlock(&rs.lock);
                        break;
                }
                started++;
        }
        pthread_attr_destroy(&attr);
        for (unsigned i = 0; i < started; i++)
                pthread_join(th[i], NULL);
        pthread_mutex_destroy(&rs.lock);
        rs.sum.seconds = (double)(kiln_now_ms() - t0) / 1000.0;
        rs.sum.quota_left = -1;
        {
                struct db_work_order wo;

                if (db_work_order_get(e->db, e->work_order, &wo) == KILN_OK)
                        rs.sum.quota_left = (int64_t)wo.quota - wo.reserved - wo.consumed;
        }
        *ret = rs.sum;
        return r < 0 ? r : rs.first_error;
}
