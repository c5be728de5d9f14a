/*
 * hefl._mont: Montgomery-form batch kernels on GMP's mpn layer.
 *
 * The fixed-base products (DJN obfuscators) and the histogram products are long chains
 * of modular multiplications by one modulus; in Montgomery form each link is one
 * mpn_mul_n plus one REDC instead of a multiplication plus a division, about twice as
 * fast for 2048-bit moduli.  REDC is GMP's mpn_redc_1 where the library exports it
 * (every GMP since 5.0 does, as __gmpn_redc_1) and a portable addmul_1 loop otherwise.
 * Values stay below R = 2^(64 L) between steps and are fully reduced at the end.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <gmp.h>
#include <string.h>
#include <stdint.h>

extern mp_limb_t __gmpn_redc_1(mp_ptr, mp_ptr, mp_srcptr, mp_size_t, mp_limb_t) __attribute__((weak));

typedef struct {
    const mp_limb_t *m;
    mp_size_t n;
    mp_limb_t minv; /* -1/m mod 2^64 */
} mctx;

static mp_limb_t neg_inv(mp_limb_t m0) {
    mp_limb_t inv = 1;
    for (int i = 0; i < 7; i++) inv *= 2 - m0 * inv; /* Newton: 1/m0 mod 2^64 */
    return (mp_limb_t)0 - inv;
}

static int force_portable = 0; /* tests switch to the portable REDC */

/* rp = up / R mod m (up has 2n limbs, destroyed); result < R */
static void redc(mp_ptr rp, mp_ptr up, const mctx *c) {
    mp_limb_t cy;
    if (__gmpn_redc_1 && !force_portable) {
        cy = __gmpn_redc_1(rp, up, c->m, c->n, c->minv);
    } else {
        for (mp_size_t i = 0; i < c->n; i++) {
            mp_limb_t u = up[i] * c->minv;
            mp_limb_t hi = mpn_addmul_1(up + i, c->m, c->n, u);
            up[i] = hi; /* the low limb is now zero: keep the carry there */
        }
        cy = mpn_add_n(rp, up + c->n, up, c->n);
    }
    if (cy) mpn_sub_n(rp, rp, c->m, c->n);
}

/* rp = a b / R mod m; tmp has 2n limbs */
static inline void montmul(mp_ptr rp, mp_srcptr a, mp_srcptr b, mp_ptr tmp, const mctx *c) {
    if (a == b) mpn_sqr(tmp, a, c->n); else mpn_mul_n(tmp, a, b, c->n);
    redc(rp, tmp, c);
}

static inline void canon(mp_ptr rp, const mctx *c) {
    if (mpn_cmp(rp, c->m, c->n) >= 0) mpn_sub_n(rp, rp, c->m, c->n);
}

static int check_buf(Py_buffer *b, Py_ssize_t need, const char *name) {
    if (b->len < need) {
        PyErr_Format(PyExc_ValueError, "buffer %s too small: %zd bytes < %zd", name, b->len, need);
        return 0;
    }
    return 1;
}

/*
 * fb_powmod(table_mont, w, nwin, e, Le, m, out, L): out[i] = prod_win T[win][digit] in
 * standard form, where T holds base^(d 2^(w win)) * R mod m (Montgomery form).
 */
static PyObject *py_fb_powmod(PyObject *self, PyObject *args) {
    Py_buffer t, e, m, out; Py_ssize_t w, nwin, Le, L;
    if (!PyArg_ParseTuple(args, "y*nny*ny*w*n", &t, &w, &nwin, &e, &Le, &m, &out, &L)) return NULL;
    Py_ssize_t N = e.len / (8 * Le), tsize = (Py_ssize_t)1 << w;
    PyObject *res = NULL;
    if (w < 1 || w > 16) { PyErr_SetString(PyExc_ValueError, "window must be in [1, 16]"); goto done; }
    if (!check_buf(&t, nwin * tsize * 8 * L, "table") || !check_buf(&out, N * 8 * L, "out") || !check_buf(&m, 8 * L, "m")) goto done;
    const uint64_t *ep = (const uint64_t *)e.buf;
    for (Py_ssize_t i = 0; i < N; i++)
        for (Py_ssize_t bit = w * nwin; bit < 64 * Le; bit++)
            if ((ep[i * Le + bit / 64] >> (bit % 64)) & 1) {
                PyErr_SetString(PyExc_ValueError, "exponent larger than the fixed-base table");
                goto done;
            }
    Py_BEGIN_ALLOW_THREADS
    mctx c = {(const mp_limb_t *)m.buf, (mp_size_t)L, neg_inv(((const mp_limb_t *)m.buf)[0])};
    mp_limb_t *acc = PyMem_RawMalloc(8 * L), *tmp = PyMem_RawMalloc(16 * L);
    const mp_limb_t *tb = (const mp_limb_t *)t.buf;
    for (Py_ssize_t i = 0; i < N; i++) {
        const uint64_t *ei = ep + i * Le;
        int started = 0;
        for (Py_ssize_t win = 0; win < nwin; win++) {
            Py_ssize_t bit = win * w;
            if (bit >= 64 * Le) break;
            Py_ssize_t limb = bit / 64, off = bit % 64;
            uint64_t d = ei[limb] >> off;
            if (off + w > 64 && limb + 1 < Le) d |= ei[limb + 1] << (64 - off);
            d &= (uint64_t)(tsize - 1);
            if (!d) continue;
            const mp_limb_t *entry = tb + ((size_t)win * tsize + d) * L;
            if (!started) { memcpy(acc, entry, 8 * L); started = 1; }
            else montmul(acc, acc, entry, tmp, &c);
        }
        mp_limb_t *o = (mp_limb_t *)out.buf + i * L;
        if (!started) { memset(o, 0, 8 * L); o[0] = 1; continue; }
        /* leave Montgomery form: acc * 1 / R */
        memcpy(tmp, acc, 8 * L); memset(tmp + L, 0, 8 * L);
        redc(o, tmp, &c);
        canon(o, &c);
    }
    PyMem_RawFree(acc); PyMem_RawFree(tmp);
    Py_END_ALLOW_THREADS
    res = Py_None; Py_INCREF(res);
done:
    PyBuffer_Release(&t); PyBuffer_Release(&e); PyBuffer_Release(&m); PyBuffer_Release(&out);
    return res;
}

/*
 * bucket_prod(a, ids, F, NB, m, rpow, out, L): out[f, b] = prod_{ids[i,f]==b} a[i] mod m.
 * Chains in Montgomery arithmetic on standard-form inputs: k factors give
 * prod * R^-(k-1); one final montmul by R^k mod m (rpow(k), computed here) fixes it.
 */
static PyObject *py_bucket_prod(PyObject *self, PyObject *args) {
    Py_buffer a, ids, m, rb, out; Py_ssize_t F, NB, L;
    if (!PyArg_ParseTuple(args, "y*y*nny*y*w*n", &a, &ids, &F, &NB, &m, &rb, &out, &L)) return NULL;
    Py_ssize_t N = a.len / (8 * L);
    PyObject *res = NULL;
    mp_limb_t *acc = NULL; int64_t *cnt = NULL;
    if (!check_buf(&ids, N * F * 4, "ids") || !check_buf(&out, F * NB * 8 * L, "out") ||
        !check_buf(&m, 8 * L, "m") || !check_buf(&rb, 8 * L, "r")) goto done;
    const int32_t *id = (const int32_t *)ids.buf;
    for (Py_ssize_t i = 0; i < N * F; i++)
        if (id[i] >= NB) { PyErr_Format(PyExc_ValueError, "bucket id %d out of range [0, %zd)", id[i], NB); goto done; }
    acc = PyMem_RawMalloc((size_t)(F * NB) * 8 * L);
    cnt = PyMem_RawCalloc((size_t)(F * NB), sizeof(int64_t));
    if (!acc || !cnt) { PyErr_NoMemory(); goto done; }
    Py_BEGIN_ALLOW_THREADS
    mctx c = {(const mp_limb_t *)m.buf, (mp_size_t)L, neg_inv(((const mp_limb_t *)m.buf)[0])};
    mp_limb_t *tmp = PyMem_RawMalloc(16 * L);
    const mp_limb_t *ap = (const mp_limb_t *)a.buf;
    /* feature-major: one feature's NB accumulators stay in the L2 cache while the rows
     * stream past (row-major would touch F·NB accumulators, which for the paired
     * histograms of SecureBoost -- NB ~ 1000 -- no longer fit) */
    for (Py_ssize_t f = 0; f < F; f++) {
        mp_limb_t *af = acc + f * NB * L;
        int64_t *cf = cnt + f * NB;
        for (Py_ssize_t i = 0; i < N; i++) {
            int32_t b = id[i * F + f];
            if (b < 0) continue;
            const mp_limb_t *x = ap + i * L;
            mp_limb_t *ak = af + b * L;
            if (!cf[b]) memcpy(ak, x, 8 * L);
            else montmul(ak, ak, x, tmp, &c);
            cf[b]++;
        }
    }
    /* fix the R^-(k-1) factors: montmul by R^k = (R mod m)^k in standard form */
    mpz_t rm, mz, p;
    mpz_inits(rm, mz, p, NULL);
    mpz_import(rm, (size_t)L, -1, 8, 0, 0, rb.buf);
    mpz_import(mz, (size_t)L, -1, 8, 0, 0, m.buf);
    for (Py_ssize_t k = 0; k < F * NB; k++) {
        mp_limb_t *o = (mp_limb_t *)out.buf + k * L;
        if (!cnt[k]) { memset(o, 0, 8 * L); o[0] = 1; continue; }
        if (cnt[k] == 1) { memcpy(o, acc + k * L, 8 * L); canon(o, &c); continue; }
        mpz_powm_ui(p, rm, (unsigned long)cnt[k], mz);
        mp_limb_t fix[L];
        size_t got = 0;
        memset(fix, 0, 8 * L);
        mpz_export(fix, &got, -1, 8, 0, 0, p);
        montmul(o, acc + k * L, fix, tmp, &c);
        canon(o, &c);
    }
    mpz_clears(rm, mz, p, NULL);
    PyMem_RawFree(tmp);
    Py_END_ALLOW_THREADS
    res = Py_None; Py_INCREF(res);
done:
    if (acc) PyMem_RawFree(acc);
    if (cnt) PyMem_RawFree(cnt);
    PyBuffer_Release(&a); PyBuffer_Release(&ids); PyBuffer_Release(&m); PyBuffer_Release(&rb); PyBuffer_Release(&out);
    return res;
}

static PyObject *py_has_gmp_redc(PyObject *self, PyObject *args) {
    return PyBool_FromLong(__gmpn_redc_1 != NULL && !force_portable);
}

static PyObject *py_use_portable_redc(PyObject *self, PyObject *arg) {
    force_portable = PyObject_IsTrue(arg);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"fb_powmod", py_fb_powmod, METH_VARARGS, "fb_powmod(table_mont, w, nwin, e, Le, m, out, L)"},
    {"bucket_prod", py_bucket_prod, METH_VARARGS, "bucket_prod(a, ids, F, nb, m, r_mod_m, out, L)"},
    {"has_gmp_redc", py_has_gmp_redc, METH_NOARGS, "whether GMP's mpn_redc_1 is used"},
    {"use_portable_redc", py_use_portable_redc, METH_O, "use_portable_redc(flag): tests only"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_mont", "Montgomery batch kernels for hefl", -1, methods};

PyMODINIT_FUNC PyInit__mont(void) { return PyModule_Create(&moddef); }
