/*
 * hefl._native: batched big-integer kernels for the Paillier family on the CPU, on GMP.
 *
 * Every function takes numbers as C-contiguous little-endian uint64 limb buffers
 * (N rows of L limbs), writes into a caller-provided output buffer, and releases the
 * GIL while it computes, so Python can split a batch over threads.
 * Inputs are trusted to be reduced by the caller (hefl/he/_cpu.py checks shapes and
 * ranges); nothing here parses data received from a peer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <gmp.h>
#include <string.h>
#include <stdint.h>

static inline void load(mpz_t z, const uint64_t *p, Py_ssize_t L) {
    mpz_import(z, (size_t)L, -1, 8, 0, 0, p);
}

static inline void store(uint64_t *p, Py_ssize_t L, const mpz_t z) {
    size_t cnt = 0;
    memset(p, 0, (size_t)L * 8);
    /* callers guarantee 0 <= z < 2^(64 L) */
    mpz_export(p, &cnt, -1, 8, 0, 0, z);
}

static int check_buf(Py_buffer *b, Py_ssize_t need, const char *name) {
    if (b->len < need) {
        PyErr_Format(PyExc_ValueError, "buffer %s too small: %zd bytes < %zd", name, b->len, need);
        return 0;
    }
    return 1;
}

/* mulmod(a, b, m, out, L): out[i] = a[i] * b[i] mod m */
static PyObject *py_mulmod(PyObject *self, PyObject *args) {
    Py_buffer a, b, m, out; Py_ssize_t L;
    if (!PyArg_ParseTuple(args, "y*y*y*w*n", &a, &b, &m, &out, &L)) return NULL;
    Py_ssize_t N = a.len / (8 * L);
    PyObject *res = NULL;
    if (!check_buf(&b, N * 8 * L, "b") || !check_buf(&out, N * 8 * L, "out") || !check_buf(&m, 8 * L, "m")) goto done;
    Py_BEGIN_ALLOW_THREADS
    mpz_t x, y, mod; mpz_inits(x, y, mod, NULL);
    load(mod, (const uint64_t *)m.buf, L);
    for (Py_ssize_t i = 0; i < N; i++) {
        load(x, (const uint64_t *)a.buf + i * L, L);
        load(y, (const uint64_t *)b.buf + i * L, L);
        mpz_mul(x, x, y); mpz_mod(x, x, mod);
        store((uint64_t *)out.buf + i * L, L, x);
    }
    mpz_clears(x, y, mod, NULL);
    Py_END_ALLOW_THREADS
    res = Py_None; Py_INCREF(res);
done:
    PyBuffer_Release(&a); PyBuffer_Release(&b); PyBuffer_Release(&m); PyBuffer_Release(&out);
    return res;
}

/* powmod(a, L, e, Le, m, out): out[i] = a[i] ^ e[i] mod m  (e rows of Le limbs) */
static PyObject *py_powmod(PyObject *self, PyObject *args) {
    Py_buffer a, e, m, out; Py_ssize_t L, Le;
    if (!PyArg_ParseTuple(args, "y*ny*ny*w*", &a, &L, &e, &Le, &m, &out)) return NULL;
    Py_ssize_t N = a.len / (8 * L);
    PyObject *res = NULL;
    if (!check_buf(&e, N * 8 * Le, "e") || !check_buf(&out, N * 8 * L, "out") || !check_buf(&m, 8 * L, "m")) goto done;
    Py_BEGIN_ALLOW_THREADS
    mpz_t x, y, mod; mpz_inits(x, y, mod, NULL);
    load(mod, (const uint64_t *)m.buf, L);
    for (Py_ssize_t i = 0; i < N; i++) {
        load(x, (const uint64_t *)a.buf + i * L, L);
        load(y, (const uint64_t *)e.buf + i * Le, Le);
        mpz_powm(x, x, y, mod);
        store((uint64_t *)out.buf + i * L, L, x);
    }
    mpz_clears(x, y, mod, NULL);
    Py_END_ALLOW_THREADS
    res = Py_None; Py_INCREF(res);
done:
    PyBuffer_Release(&a); PyBuffer_Release(&e); PyBuffer_Release(&m); PyBuffer_Release(&out);
    return res;
}

/*
 * fb_powmod(table, w, nwin, e, Le, m, out, L): fixed-base exponentiation.
 * table[i * 2^w + d] = base^(d * 2^(w i)) mod m, i < nwin; e rows of Le limbs with
 * bit length <= w * nwin.  out[i] = prod_i table[i][digit_i(e)] mod m.
 */
static PyObject *py_fb_powmod(PyObject *self, PyObject *args) {
    Py_buffer t, e, m, out; Py_ssize_t w, nwin, Le, L;
    if (!PyArg_ParseTuple(args, "y*nny*ny*w*n", &t, &w, &nwin, &e, &Le, &m, &out, &L)) return NULL;
    Py_ssize_t N = e.len / (8 * Le);
    Py_ssize_t tsize = ((Py_ssize_t)1 << w);
    PyObject *res = NULL;
    if (w < 1 || w > 16) { PyErr_SetString(PyExc_ValueError, "window must be in [1, 16]"); goto done; }
    if (!check_buf(&t, nwin * tsize * 8 * L, "table") || !check_buf(&out, N * 8 * L, "out") || !check_buf(&m, 8 * L, "m")) goto done;
    if (w * nwin < 64 * Le) {
        /* exponents may have more bits than the table covers: refuse rather than truncate */
        const uint64_t *ep = (const uint64_t *)e.buf;
        for (Py_ssize_t i = 0; i < N; i++) {
            for (Py_ssize_t bit = w * nwin; bit < 64 * Le; bit++) {
                if ((ep[i * Le + bit / 64] >> (bit % 64)) & 1) {
                    PyErr_SetString(PyExc_ValueError, "exponent larger than the fixed-base table");
                    goto done;
                }
            }
        }
    }
    Py_BEGIN_ALLOW_THREADS
    mpz_t acc, y, mod; mpz_inits(acc, y, mod, NULL);
    load(mod, (const uint64_t *)m.buf, L);
    const uint64_t *tb = (const uint64_t *)t.buf;
    for (Py_ssize_t i = 0; i < N; i++) {
        const uint64_t *ei = (const uint64_t *)e.buf + i * Le;
        int started = 0;
        for (Py_ssize_t win = 0; win < nwin; win++) {
            Py_ssize_t bit = win * w;
            if (bit >= 64 * Le) break;
            Py_ssize_t limb = bit / 64, off = bit % 64;
            uint64_t d = ei[limb] >> off;
            if (off + w > 64 && limb + 1 < Le) d |= ei[limb + 1] << (64 - off);
            d &= (uint64_t)(tsize - 1);
            if (!d) continue;
            const uint64_t *entry = tb + ((size_t)win * tsize + d) * L;
            if (!started) { load(acc, entry, L); started = 1; }
            else { load(y, entry, L); mpz_mul(acc, acc, y); mpz_mod(acc, acc, mod); }
        }
        if (!started) mpz_set_ui(acc, 1);
        store((uint64_t *)out.buf + i * L, L, acc);
    }
    mpz_clears(acc, y, mod, NULL);
    Py_END_ALLOW_THREADS
    res = Py_None; Py_INCREF(res);
done:
    PyBuffer_Release(&t); PyBuffer_Release(&e); PyBuffer_Release(&m); PyBuffer_Release(&out);
    return res;
}

/* encrypt(m, Ln, obf, n, nsq, out, Lc): out[i] = (1 + m[i] n) * obf[i] mod n^2 */
static PyObject *py_encrypt(PyObject *self, PyObject *args) {
    Py_buffer mb, ob, nb, nsb, out; Py_ssize_t Ln, Lc;
    if (!PyArg_ParseTuple(args, "y*ny*y*y*w*n", &mb, &Ln, &ob, &nb, &nsb, &out, &Lc)) return NULL;
    Py_ssize_t N = mb.len / (8 * Ln);
    PyObject *res = NULL;
    if (!check_buf(&ob, N * 8 * Lc, "obf") || !check_buf(&out, N * 8 * Lc, "out")) goto done;
    Py_BEGIN_ALLOW_THREADS
    mpz_t x, r, n, nsq; mpz_inits(x, r, n, nsq, NULL);
    load(n, (const uint64_t *)nb.buf, Ln);
    load(nsq, (const uint64_t *)nsb.buf, Lc);
    for (Py_ssize_t i = 0; i < N; i++) {
        load(x, (const uint64_t *)mb.buf + i * Ln, Ln);
        load(r, (const uint64_t *)ob.buf + i * Lc, Lc);
        mpz_mul(x, x, n); mpz_add_ui(x, x, 1);  /* < n^2 since m < n */
        mpz_mul(x, x, r); mpz_mod(x, x, nsq);
        store((uint64_t *)out.buf + i * Lc, Lc, x);
    }
    mpz_clears(x, r, n, nsq, NULL);
    Py_END_ALLOW_THREADS
    res = Py_None; Py_INCREF(res);
done:
    PyBuffer_Release(&mb); PyBuffer_Release(&ob); PyBuffer_Release(&nb); PyBuffer_Release(&nsb); PyBuffer_Release(&out);
    return res;
}

/* bucket_prod(a, ids, F, nb, m, out, L): out[f, b] = prod_{i: ids[i,f]==b} a[i] mod m */
static PyObject *py_bucket_prod(PyObject *self, PyObject *args) {
    Py_buffer a, ids, m, out; Py_ssize_t F, NB, L;
    if (!PyArg_ParseTuple(args, "y*y*nny*w*n", &a, &ids, &F, &NB, &m, &out, &L)) return NULL;
    Py_ssize_t N = a.len / (8 * L);
    PyObject *res = NULL;
    mpz_t *acc = NULL; char *used = NULL;
    if (!check_buf(&ids, N * F * 4, "ids") || !check_buf(&out, F * NB * 8 * L, "out") || !check_buf(&m, 8 * L, "m")) goto done;
    acc = (mpz_t *)PyMem_RawMalloc(sizeof(mpz_t) * (size_t)(F * NB));
    used = (char *)PyMem_RawCalloc((size_t)(F * NB), 1);
    if (!acc || !used) { PyErr_NoMemory(); goto done; }
    const int32_t *id = (const int32_t *)ids.buf;
    for (Py_ssize_t i = 0; i < N * F; i++) {
        if (id[i] >= NB) { PyErr_Format(PyExc_ValueError, "bucket id %d out of range [0, %zd)", id[i], NB); goto done; }
    }
    Py_BEGIN_ALLOW_THREADS
    mpz_t x, mod; mpz_inits(x, mod, NULL);
    load(mod, (const uint64_t *)m.buf, L);
    for (Py_ssize_t k = 0; k < F * NB; k++) mpz_init2(acc[k], (mp_bitcnt_t)(128 * L));
    for (Py_ssize_t i = 0; i < N; i++) {
        load(x, (const uint64_t *)a.buf + i * L, L);
        for (Py_ssize_t f = 0; f < F; f++) {
            int32_t b = id[i * F + f];
            if (b < 0) continue;
            Py_ssize_t k = f * NB + b;
            if (!used[k]) { mpz_set(acc[k], x); used[k] = 1; }
            else { mpz_mul(acc[k], acc[k], x); mpz_mod(acc[k], acc[k], mod); }
        }
    }
    for (Py_ssize_t k = 0; k < F * NB; k++) {
        if (!used[k]) mpz_set_ui(acc[k], 1);
        store((uint64_t *)out.buf + k * L, L, acc[k]);
        mpz_clear(acc[k]);
    }
    mpz_clears(x, mod, NULL);
    Py_END_ALLOW_THREADS
    res = Py_None; Py_INCREF(res);
done:
    if (acc) PyMem_RawFree(acc);
    if (used) PyMem_RawFree(used);
    PyBuffer_Release(&a); PyBuffer_Release(&ids); PyBuffer_Release(&m); PyBuffer_Release(&out);
    return res;
}

/*
 * decrypt(c, Lc, p, q, hp, hq, qinv, out, Ln, Lh): CRT decryption of g = n + 1 Paillier.
 * mp = L_p(c^(p-1) mod p^2) hp mod p,  mq likewise,  m = mq + q ((mp - mq) qinv mod p).
 * p, q, hp, hq, qinv are Lh-limb numbers.
 */
static PyObject *py_decrypt(PyObject *self, PyObject *args) {
    Py_buffer c, pb, qb, hpb, hqb, qib, out; Py_ssize_t Lc, Ln, Lh;
    if (!PyArg_ParseTuple(args, "y*ny*y*y*y*y*w*nn", &c, &Lc, &pb, &qb, &hpb, &hqb, &qib, &out, &Ln, &Lh)) return NULL;
    Py_ssize_t N = c.len / (8 * Lc);
    PyObject *res = NULL;
    if (!check_buf(&out, N * 8 * Ln, "out")) goto done;
    Py_BEGIN_ALLOW_THREADS
    mpz_t x, y, p, q, p2, q2, pm1, qm1, hp, hq, qinv, mp, mq;
    mpz_inits(x, y, p, q, p2, q2, pm1, qm1, hp, hq, qinv, mp, mq, NULL);
    load(p, (const uint64_t *)pb.buf, Lh); load(q, (const uint64_t *)qb.buf, Lh);
    load(hp, (const uint64_t *)hpb.buf, Lh); load(hq, (const uint64_t *)hqb.buf, Lh);
    load(qinv, (const uint64_t *)qib.buf, Lh);
    mpz_mul(p2, p, p); mpz_mul(q2, q, q);
    mpz_sub_ui(pm1, p, 1); mpz_sub_ui(qm1, q, 1);
    for (Py_ssize_t i = 0; i < N; i++) {
        load(x, (const uint64_t *)c.buf + i * Lc, Lc);
        mpz_mod(y, x, p2); mpz_powm(y, y, pm1, p2); mpz_sub_ui(y, y, 1); mpz_divexact(y, y, p);
        mpz_mul(y, y, hp); mpz_mod(mp, y, p);
        mpz_mod(y, x, q2); mpz_powm(y, y, qm1, q2); mpz_sub_ui(y, y, 1); mpz_divexact(y, y, q);
        mpz_mul(y, y, hq); mpz_mod(mq, y, q);
        mpz_sub(y, mp, mq); mpz_mul(y, y, qinv); mpz_mod(y, y, p);
        mpz_mul(y, y, q); mpz_add(y, y, mq);
        store((uint64_t *)out.buf + i * Ln, Ln, y);
    }
    mpz_clears(x, y, p, q, p2, q2, pm1, qm1, hp, hq, qinv, mp, mq, NULL);
    Py_END_ALLOW_THREADS
    res = Py_None; Py_INCREF(res);
done:
    PyBuffer_Release(&c); PyBuffer_Release(&pb); PyBuffer_Release(&qb); PyBuffer_Release(&hpb);
    PyBuffer_Release(&hqb); PyBuffer_Release(&qib); PyBuffer_Release(&out);
    return res;
}

/* crt(xp, Lp, xq, Lq, p2, q2, q2inv, out, L): out = xq + q2 ((xp - xq) q2inv mod p2) */
static PyObject *py_crt(PyObject *self, PyObject *args) {
    Py_buffer xp, xq, p2b, q2b, qib, out; Py_ssize_t Lp, Lq, L;
    if (!PyArg_ParseTuple(args, "y*ny*ny*y*y*w*n", &xp, &Lp, &xq, &Lq, &p2b, &q2b, &qib, &out, &L)) return NULL;
    Py_ssize_t N = xp.len / (8 * Lp);
    PyObject *res = NULL;
    if (!check_buf(&xq, N * 8 * Lq, "xq") || !check_buf(&out, N * 8 * L, "out")) goto done;
    Py_BEGIN_ALLOW_THREADS
    mpz_t a, b, p2, q2, qi; mpz_inits(a, b, p2, q2, qi, NULL);
    load(p2, (const uint64_t *)p2b.buf, Lp); load(q2, (const uint64_t *)q2b.buf, Lq);
    load(qi, (const uint64_t *)qib.buf, Lp);
    for (Py_ssize_t i = 0; i < N; i++) {
        load(a, (const uint64_t *)xp.buf + i * Lp, Lp);
        load(b, (const uint64_t *)xq.buf + i * Lq, Lq);
        mpz_sub(a, a, b); mpz_mul(a, a, qi); mpz_mod(a, a, p2);
        mpz_mul(a, a, q2); mpz_add(a, a, b);
        store((uint64_t *)out.buf + i * L, L, a);
    }
    mpz_clears(a, b, p2, q2, qi, NULL);
    Py_END_ALLOW_THREADS
    res = Py_None; Py_INCREF(res);
done:
    PyBuffer_Release(&xp); PyBuffer_Release(&xq); PyBuffer_Release(&p2b); PyBuffer_Release(&q2b);
    PyBuffer_Release(&qib); PyBuffer_Release(&out);
    return res;
}

/* check_range(a, L, n, nsq): index of the first row not in [1, n^2) or not coprime to n, else -1 */
static PyObject *py_check_range(PyObject *self, PyObject *args) {
    Py_buffer a, nb, nsb; Py_ssize_t L, Ln;
    if (!PyArg_ParseTuple(args, "y*ny*ny*", &a, &L, &nb, &Ln, &nsb)) return NULL;
    Py_ssize_t N = a.len / (8 * L), bad = -1;
    Py_BEGIN_ALLOW_THREADS
    mpz_t x, g, n, nsq; mpz_inits(x, g, n, nsq, NULL);
    load(n, (const uint64_t *)nb.buf, Ln); load(nsq, (const uint64_t *)nsb.buf, L);
    for (Py_ssize_t i = 0; i < N; i++) {
        load(x, (const uint64_t *)a.buf + i * L, L);
        if (mpz_sgn(x) <= 0 || mpz_cmp(x, nsq) >= 0) { bad = i; break; }
        mpz_gcd(g, x, n);
        if (mpz_cmp_ui(g, 1) != 0) { bad = i; break; }
    }
    mpz_clears(x, g, n, nsq, NULL);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&a); PyBuffer_Release(&nb); PyBuffer_Release(&nsb);
    return PyLong_FromSsize_t(bad);
}

static PyMethodDef methods[] = {
    {"mulmod", py_mulmod, METH_VARARGS, "mulmod(a, b, m, out, L)"},
    {"powmod", py_powmod, METH_VARARGS, "powmod(a, L, e, Le, m, out)"},
    {"fb_powmod", py_fb_powmod, METH_VARARGS, "fb_powmod(table, w, nwin, e, Le, m, out, L)"},
    {"encrypt", py_encrypt, METH_VARARGS, "encrypt(m, Ln, obf, n, nsq, out, Lc)"},
    {"bucket_prod", py_bucket_prod, METH_VARARGS, "bucket_prod(a, ids, F, nb, m, out, L)"},
    {"decrypt", py_decrypt, METH_VARARGS, "decrypt(c, Lc, p, q, hp, hq, qinv, out, Ln, Lh)"},
    {"crt", py_crt, METH_VARARGS, "crt(xp, Lp, xq, Lq, p2, q2, q2inv, out, L)"},
    {"check_range", py_check_range, METH_VARARGS, "check_range(a, L, n, Ln, nsq) -> first bad row or -1"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_native", "GMP batch kernels for hefl", -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&moddef); }
