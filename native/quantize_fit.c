/* quantize_fit.c: least-squares scale searches for one group of weights.
 *
 * Rounding x / s to the nearest level is optimal for a fixed scale, and the
 * least-squares scale is optimal for fixed levels, but alternating the two
 * only finds a local optimum. So both searches first try a grid of scales
 * around the one that maps the group's extreme value to the extreme level
 * (slightly larger scales clip that value and round the rest more finely,
 * slightly smaller ones never clip), keep the best least-squares fit, then
 * alternate from it until the error stops falling.
 */
#include "quantize.h"

#include <math.h>
#include <string.h>

#define MAX_GROUP 32
#define REFINE_STEPS 8

float ps_round_group(const float *x, int n, float s, float o, int lo, int hi, int8_t *L) {
    float err = 0.0f;
    if (s == 0.0f) {
        for (int i = 0; i < n; i++) {
            L[i] = (int8_t)(lo > 0 ? lo : (hi < 0 ? hi : 0));
            const float e = o - x[i];
            err += e * e;
        }
        return err;
    }
    const float inv = 1.0f / s;
    for (int i = 0; i < n; i++) {
        const int l = ps_qround((x[i] - o) * inv, lo, hi);
        L[i] = (int8_t)l;
        const float e = s * (float)l + o - x[i];
        err += e * e;
    }
    return err;
}

/* ---- x ~= s * L ------------------------------------------------------------ */

/* sum(x L)^2 / sum(L^2): how much of sum(x^2) the least-squares scale for
 * levels L explains (the error is sum(x^2) minus this). */
static double explained(const float *x, int n, const int8_t *L, double *scale) {
    double sxl = 0, sll = 0;
    for (int i = 0; i < n; i++) {
        sxl += (double)x[i] * L[i];
        sll += (double)L[i] * L[i];
    }
    if (sll <= 0) {
        *scale = 0;
        return 0;
    }
    *scale = sxl / sll;
    return sxl * sxl / sll;
}

float ps_fit_scale(const float *x, int n, int lo, int hi, int8_t *L) {
    float amax = 0.0f, xm = 0.0f;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            xm = x[i];
        }
    for (int i = 0; i < n; i++) L[i] = 0;
    if (!(amax > 0.0f)) return 0.0f;
    int8_t T[MAX_GROUP];
    double best = -1.0, best_s = 0.0;
    /* the extreme value xm at level t: both ends of the (asymmetric) range */
    for (int end = 0; end < 2; end++)
        for (int k = -9; k <= 9; k++) {
            const float t = (end ? (float)hi : (float)lo) + 0.1f * (float)k * (end ? 1.0f : -1.0f);
            const float is = t / xm;
            for (int i = 0; i < n; i++) T[i] = (int8_t)ps_qround(is * x[i], lo, hi);
            double s;
            const double e = explained(x, n, T, &s);
            if (e > best) {
                best = e;
                best_s = s;
                memcpy(L, T, (size_t)n);
            }
        }
    for (int step = 0; step < REFINE_STEPS && best_s != 0.0; step++) {
        const float s = (float)best_s;
        const float inv = 1.0f / s;
        for (int i = 0; i < n; i++) T[i] = (int8_t)ps_qround(x[i] * inv, lo, hi);
        double s2;
        const double e = explained(x, n, T, &s2);
        if (!(e > best * (1.0 + 1e-12))) break;
        best = e;
        best_s = s2;
        memcpy(L, T, (size_t)n);
    }
    return (float)best_s;
}

/* ---- x ~= s * L + o ----------------------------------------------------------- */

/* Sums of a group that every candidate's fit needs. */
typedef struct { double sx, sxx; } moments;

/* Least-squares s, o for levels L (o clamped to <= 0 when asked); the
 * squared error (from the sums, no pass over x), or -1 when the levels
 * cannot determine a scale. */
static double fit_affine(const float *x, int n, const int8_t *L, const moments *m, int nonpos, float *s,
                         float *o) {
    int sl = 0, sll = 0;
    double slx = 0;
    for (int i = 0; i < n; i++) {
        sl += L[i];
        sll += L[i] * L[i];
        slx += (double)L[i] * x[i];
    }
    const double D = (double)n * sll - (double)sl * sl;
    if (!(D > 0)) return -1;
    double ds = (n * slx - sl * m->sx) / D, dofs = (sll * m->sx - sl * slx) / D;
    if (nonpos && dofs > 0) {
        dofs = 0;
        ds = slx / sll;
    }
    if (!(ds > 0)) return -1;
    *s = (float)ds;
    *o = (float)dofs;
    const double fs = *s, fo = *o; /* the error of the values as stored in float */
    const double err = m->sxx - 2 * fs * slx - 2 * fo * m->sx + fs * fs * sll + 2 * fs * fo * sl + n * fo * fo;
    return err > 0 ? err : 0;
}

float ps_fit_scale_offset(const float *x, int n, int hi, int nonpos, int8_t *L, float *o) {
    float mn = x[0], mx = x[0];
    moments m = {0, 0};
    for (int i = 0; i < n; i++) {
        mn = fminf(mn, x[i]);
        mx = fmaxf(mx, x[i]);
        m.sx += x[i];
        m.sxx += (double)x[i] * x[i];
    }
    if (nonpos && mn > 0.0f) mn = 0.0f;
    if (!(mx > mn)) { /* a constant group */
        for (int i = 0; i < n; i++) L[i] = 0;
        *o = mn;
        return 0.0f;
    }
    /* the plain min/max mapping: always valid (o = mn <= 0 when asked) */
    float best_s = (mx - mn) / (float)hi, best_o = mn;
    double best = ps_round_group(x, n, best_s, best_o, 0, hi, L);
    int8_t T[MAX_GROUP];
    for (int k = -15; k <= 10; k++) {
        const float is = ((float)hi + 0.1f * (float)k) / (mx - mn);
        for (int i = 0; i < n; i++) T[i] = (int8_t)ps_qround(is * (x[i] - mn), 0, hi);
        float s, ofs;
        const double e = fit_affine(x, n, T, &m, nonpos, &s, &ofs);
        if (e >= 0 && e < best) {
            best = e;
            best_s = s;
            best_o = ofs;
            memcpy(L, T, (size_t)n);
        }
    }
    for (int step = 0; step < REFINE_STEPS; step++) {
        ps_round_group(x, n, best_s, best_o, 0, hi, T);
        float s, ofs;
        const double e = fit_affine(x, n, T, &m, nonpos, &s, &ofs);
        if (!(e >= 0 && e < best * (1.0 - 1e-12))) break;
        best = e;
        best_s = s;
        best_o = ofs;
        memcpy(L, T, (size_t)n);
    }
    *o = best_o;
    return best_s;
}
